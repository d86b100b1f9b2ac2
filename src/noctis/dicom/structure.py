"""The structural walk at ingest: every byte of a received data set accounted for, no pixel
decoded.

A truncated or damaged instance must be refused before it is stored: pydicom's header parse
stops before Pixel Data, so a data set cut inside its pixels parses fine and its frames come
back short for ever. `walk_part10` reads the File Meta Information, then every element header
of the data set to its last byte (PS3.5 7.1), seeking over values: element lengths against the
end of their data set, item or sequence; sequences and items of defined and undefined length,
nested (7.5); encapsulated Pixel Data as items ending in a sequence delimiter (A.4). It then
checks the pixel data against what the header declares (`noctis.dicom.pixel_checks`). A
deflated data set (A.5) is walked from a streaming inflater with a cap on the inflated size.

The encoding is the one the transfer syntax says, never guessed from the bytes: the File Meta
Information is explicit VR little endian, the data set is in its syntax's VR and byte order,
implicit VR only for Implicit VR Little Endian (and inside UN of undefined length, PS3.5
6.2.2). So the verdict is the same whatever sizes the file is read in.

Every refusal is a MalformedDicom whose message starts with what is wrong, short enough for a
DIMSE ErrorComment (64 characters). Bounds: nesting depth, element count, captured values.

It reads only up to the pixel data (the first few KB of a CT instance), and keeps the index's
attributes on the way, so ingest's whole header step (walk, pixel checks, header, UIDs:
`noctis.dicom.header.read_checked_header`) costs about what the header parse alone did before
the checks existed; bench/ measures the store path it is part of.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from pydicom.datadict import DicomDictionary

from noctis.dicom.errors import MalformedDicom
from noctis.dicom.inflate import DEFAULT_MAX_INFLATED
from noctis.dicom.sources import FileSource, InflatingSource

PREAMBLE_END = 132  # 128-byte preamble + "DICM"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, PIXEL_DATA})  # float, double, Pixel Data
TRANSFER_SYNTAX_TAG = 0x00020010

MAX_DEPTH = 32  # sequences nested deeper are refused (real objects nest a handful)
# Bounds the walk's time (linear in the elements) on a small input, deflated or of empty elements;
# the largest real objects (RT structure sets, enhanced multi-frame) hold a few hundred thousand.
MAX_ELEMENTS = 1_000_000
MAX_CAPTURED = 64 << 10  # a captured attribute's value (text, US) longer than this is refused

_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT"}
    | {b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)
_VRS = _LONG_VRS | _SHORT_VRS
# Implicit VR: which tags hold sequences (so a defined-length value is walked into).
_SEQUENCE_TAGS = frozenset(tag for tag, entry in DicomDictionary.items() if entry[0] == "SQ")

# What the pixel checks read from the top level; (tag -> keyword).
PIXEL_ATTRIBUTES = {
    0x00280002: "SamplesPerPixel",
    0x00280004: "PhotometricInterpretation",
    0x00280008: "NumberOfFrames",
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280100: "BitsAllocated",
}

Reader = Callable[[int], tuple[int, bytes | None, int, int]]
_EXPLICIT_LITTLE = struct.Struct("<HH2sH")
_IMPLICIT_LITTLE = struct.Struct("<HHL")


@dataclass
class PixelElement:
    """A top-level pixel data element as found: where, how long, and its items if
    encapsulated (undefined length)."""

    tag: int
    length: int  # UNDEFINED for encapsulated
    offset_table_length: int = 0  # encapsulated: the Basic Offset Table item's length
    first_offset: int | None = None  # encapsulated: the table's first entry, if any
    fragments: int = 0  # encapsulated: items after the offset table


@dataclass
class Walked:
    """What the walk found: the transfer syntax, the top-level elements it was asked to keep
    (tag -> (explicit VR or None, raw value)), and the pixel data elements."""

    transfer_syntax: str
    little_endian: bool
    captured: dict[int, tuple[bytes | None, bytes]] = field(default_factory=dict)
    pixels: list[PixelElement] = field(default_factory=list)
    pixel_data_offset: int | None = None  # of the (7FE0,0010) tag, in the file (not deflated)


def tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def walk_part10(
    handle: BinaryIO,
    *,
    capture: frozenset[int] = frozenset(),
    max_inflated: int = 0,
    header_only: bool = False,
) -> Walked:
    """Walk the Part 10 file open in ``handle`` to its last byte; MalformedDicom on damage.

    ``capture``: top-level tags whose raw values to return (besides the pixel attributes);
    ``max_inflated``: the cap on a deflated data set's inflated size (0: the default);
    ``header_only``: stop at the first top-level pixel data element (to read a header).
    """
    start, syntax, file = file_meta(handle)
    if not syntax:
        raise MalformedDicom("file meta information has no Transfer Syntax UID")
    little = syntax != EXPLICIT_VR_BIG_ENDIAN
    explicit = syntax != IMPLICIT_VR_LITTLE_ENDIAN
    source: FileSource | InflatingSource = file
    if syntax == DEFLATED:  # offsets count inflated bytes from the data set's start
        source = InflatingSource(handle, start, max_inflated or DEFAULT_MAX_INFLATED)
        start = 0
    walked = Walked(syntax, little)
    walk = _Walk(source, walked, capture | frozenset(PIXEL_ATTRIBUTES))
    walk.top(start, explicit, little, header_only)
    return walked


def file_meta(handle: BinaryIO) -> tuple[int, str, FileSource]:
    """The data set's offset and the transfer syntax, past the File Meta Information
    (explicit VR little endian, group 0002), and the file as a source (its first read, which
    usually holds the whole header, serves the walk of the data set too)."""
    source = FileSource(handle, 0)
    head, _ = source.window(0, PREAMBLE_END)
    if len(head) < PREAMBLE_END or head[128:PREAMBLE_END] != b"DICM":
        raise MalformedDicom("not a DICOM Part 10 file: no DICM prefix after the preamble")
    read = _reader(source, explicit=True, little=True)
    offset, syntax = PREAMBLE_END, ""
    while True:
        data, base = source.window(offset, 12)
        at = offset - base
        if len(data) - at < 6 or data[at : at + 2] != b"\x02\x00":
            return offset, syntax, source
        tag, _, length, value_at = read(offset)
        if length == UNDEFINED or value_at + length > source.end:
            raise MalformedDicom(f"file meta element {tag_text(tag)} runs past the end")
        if tag == TRANSFER_SYNTAX_TAG:
            if length > 64:  # a UID
                raise MalformedDicom(f"file meta Transfer Syntax UID of {length} bytes")
            data, base = source.window(value_at, length)
            raw = data[value_at - base : value_at - base + length]
            syntax = raw.decode("ascii", "replace").replace("\x00", "").strip()
        offset = value_at + length


def _reader(source: FileSource | InflatingSource, explicit: bool, little: bool) -> Reader:
    """A function reading the element header at an offset: (tag, VR or None, length, offset
    of the value); MalformedDicom if the header is cut or its VR is not one."""
    order = "<" if little else ">"
    implicit_header = struct.Struct(order + "HHL")
    explicit_header = struct.Struct(order + "HH2sH")
    long_length = struct.Struct(order + "L")

    def read(offset: int) -> tuple[int, bytes | None, int, int]:
        data, base = source.window(offset, 12)
        at = offset - base
        if len(data) - at < 8:
            raise MalformedDicom(f"data set ends inside an element header at byte {offset}")
        if not explicit:
            group, element, length = implicit_header.unpack_from(data, at)
            return group << 16 | element, None, length, offset + 8
        group, element, vr, length = explicit_header.unpack_from(data, at)
        tag = group << 16 | element
        if group == 0xFFFE:  # items and delimiters have no VR
            return tag, None, long_length.unpack_from(data, at + 4)[0], offset + 8
        if vr in _SHORT_VRS:
            return tag, vr, length, offset + 8
        if vr in _LONG_VRS:
            if len(data) - at < 12:
                raise MalformedDicom(f"data set ends inside the header of {tag_text(tag)}")
            return tag, vr, long_length.unpack_from(data, at + 8)[0], offset + 12
        raise MalformedDicom(f"element {tag_text(tag)} has no valid VR ({vr!r})")

    return read


class _Walk:
    def __init__(
        self, source: FileSource | InflatingSource, walked: Walked, capture: frozenset[int]
    ) -> None:
        self.source = source
        self.walked = walked
        self.capture = capture
        self.elements = 0
        self.readers: dict[tuple[bool, bool], Reader] = {}

    def reader(self, explicit: bool, little: bool) -> Reader:
        key = (explicit, little)
        if key not in self.readers:
            self.readers[key] = _reader(self.source, explicit, little)
        return self.readers[key]

    def count(self) -> None:
        self.elements += 1
        if self.elements > MAX_ELEMENTS:
            raise MalformedDicom(f"data set holds more than {MAX_ELEMENTS} elements")

    def declared_encoding(self, offset: int, explicit: bool) -> None:
        """Refuse, saying why, a data set whose first element has no VR where its transfer
        syntax says explicit VR (an implicit VR data set under an explicit syntax: pydicom
        guesses and reads such files; the walk never guesses, it would refuse the element
        anyway, with a puzzling message)."""
        if not explicit:
            return
        data, base = self.source.window(offset, 6)
        at = offset - base
        if len(data) - at < 6 or data[at : at + 2] == b"\xfe\xff":
            return  # `element` says what is wrong
        if bytes(data[at + 4 : at + 6]) not in _VRS:
            raise MalformedDicom("data set is not in the explicit VR its transfer syntax says")

    def top(self, offset: int, explicit: bool, little: bool, header_only: bool) -> None:
        """The data set from ``offset`` to the end of the file (or inflated stream), in the
        encoding its transfer syntax says (never guessed from the bytes: a guess made on what
        one read happens to hold gave answers that depended on read sizes)."""
        self.declared_encoding(offset, explicit)
        read = self.reader(explicit, little)
        source = self.source
        if little and not header_only and isinstance(source, FileSource):
            offset = self.plain_top(offset, read, explicit)
        while not source.at_end(offset):
            if header_only and read(offset)[0] in PIXEL_DATA_TAGS:
                return
            offset = self.element(read, offset, None, explicit, little, 0, top=True)

    def plain_top(self, offset: int, read: Reader, explicit: bool) -> int:
        """The top level of a little endian file, the common case, with plain elements (short
        VRs, or implicit VR ones that are not sequences: most of a header) handled inline: a
        call per element was a third of the walk's time. Everything else goes through
        `element`. Returns the end."""
        source = self.source
        assert isinstance(source, FileSource)
        end, capture, captured = source.end, self.capture, self.walked.captured
        data, base = source.window(offset, 12)
        while offset < end:
            at = offset - base
            if at + 12 > len(data):
                # The source may answer from a window it already holds, starting before
                # ``offset`` (after `element` walked a sequence, say): never assume at = 0.
                data, base = source.window(offset, 12)
                at = offset - base
                if len(data) - at < 8:  # cut inside an element header: `element` says so
                    offset = self.element(read, offset, None, explicit, True, 0, top=True)
                    continue
            if explicit:
                group, element, vr, length = _EXPLICIT_LITTLE.unpack_from(data, at)
                tag = group << 16 | element
                plain = vr in _SHORT_VRS
            else:
                group, element, length = _IMPLICIT_LITTLE.unpack_from(data, at)
                tag, vr = group << 16 | element, None
                plain = (
                    length != UNDEFINED and tag not in _SEQUENCE_TAGS and tag not in PIXEL_DATA_TAGS
                )
            value_end = offset + 8 + length
            oversized = tag in capture and length > MAX_CAPTURED  # element() refuses it
            if not plain or value_end > end or group == 0xFFFE or oversized:
                offset = self.element(read, offset, None, explicit, True, 0, top=True)
                continue
            self.elements += 1
            if self.elements > MAX_ELEMENTS:  # before walking millions more
                raise MalformedDicom(f"data set holds more than {MAX_ELEMENTS} elements")
            if tag in capture and not self.walked.pixels:
                if value_end - base > len(data):
                    data, base = source.window(offset, 8 + length)
                    at = offset - base
                captured[tag] = (vr, data[at + 8 : at + 8 + length])
            offset = value_end
        return offset

    def elements_of_item(
        self, offset: int, end: int | None, explicit: bool, little: bool, depth: int
    ) -> int:
        """An item's data set: up to ``end``, or to its Item Delimitation Item (``end`` None).
        Returns the offset after it."""
        if depth > MAX_DEPTH:
            raise MalformedDicom(f"sequences nested deeper than {MAX_DEPTH} levels")
        read = self.reader(explicit, little)
        while True:
            if end is not None and offset >= end:
                if offset > end:
                    raise MalformedDicom("an element runs past the end of its item")
                return offset
            if end is None:
                tag, _, _, value_at = read(offset)
                if tag == ITEM_END:
                    self.count()
                    return value_at
            offset = self.element(read, offset, end, explicit, little, depth)

    def element(
        self,
        read: Reader,
        offset: int,
        end: int | None,
        explicit: bool,
        little: bool,
        depth: int,
        top: bool = False,
    ) -> int:
        """One element at ``offset`` (inside a bound ``end`` if any); the offset after it."""
        self.count()
        tag, vr, length, value_at = read(offset)
        if tag >> 16 == 0xFFFE:
            raise MalformedDicom(f"{tag_text(tag)} found where an element was expected")
        if length == UNDEFINED:
            if tag in PIXEL_DATA_TAGS or vr in (b"OB", b"OW"):
                return self.fragments(tag, offset, value_at, little, top)
            if vr is None or vr in (b"SQ", b"UN"):
                # UN of undefined length holds implicit VR little endian (PS3.5 6.2.2)
                item_explicit, item_little = (False, True) if vr == b"UN" else (explicit, little)
                return self.sequence(value_at, None, item_explicit, item_little, depth + 1)
            raise MalformedDicom(f"{tag_text(tag)} ({vr.decode()}) has an undefined length")
        value_end = value_at + length
        if end is not None and value_end > end:
            raise MalformedDicom(f"{tag_text(tag)} runs past the end of its item")
        if vr == b"SQ" or (vr is None and tag in _SEQUENCE_TAGS):
            self.sequence(value_at, value_end, explicit, little, depth + 1)
            return value_end
        if top and tag in self.capture and not self.walked.pixels:  # as pydicom, stop there
            self.keep(tag, vr, value_at, length)
        if not self.source.reaches(value_end):
            if tag in PIXEL_DATA_TAGS:
                raise MalformedDicom(f"Pixel Data truncated: {length} bytes declared, fewer sent")
            raise MalformedDicom(f"{tag_text(tag)} runs past the end of the data set")
        if top and tag in PIXEL_DATA_TAGS:
            self.found_pixels(PixelElement(tag, length), offset)
        return value_end

    def found_pixels(self, pixels: PixelElement, offset: int) -> None:
        walked = self.walked
        if not walked.pixels and pixels.tag == PIXEL_DATA and walked.transfer_syntax != DEFLATED:
            walked.pixel_data_offset = offset
        walked.pixels.append(pixels)

    def keep(self, tag: int, vr: bytes | None, value_at: int, length: int) -> None:
        if length > MAX_CAPTURED:
            raise MalformedDicom(f"{tag_text(tag)} is {length} bytes long")
        data, base = self.source.window(value_at, length)
        raw = bytes(data[value_at - base : value_at - base + length])
        if len(raw) == length:  # else the caller refuses the element as truncated
            self.walked.captured[tag] = (vr, raw)

    def sequence(
        self, offset: int, end: int | None, explicit: bool, little: bool, depth: int
    ) -> int:
        """A sequence's items: up to ``end``, or to its Sequence Delimitation Item."""
        read = self.reader(False, little)  # item tags carry no VR
        while True:
            if end is not None and offset >= end:
                if offset > end:
                    raise MalformedDicom("an item runs past the end of its sequence")
                return offset
            self.count()
            tag, _, length, value_at = read(offset)
            if tag == SEQUENCE_END and end is None:
                return value_at
            if tag != ITEM:
                raise MalformedDicom(f"{tag_text(tag)} found where a sequence item was expected")
            if length == UNDEFINED:
                offset = self.elements_of_item(value_at, None, explicit, little, depth)
            else:
                if end is not None and value_at + length > end:
                    raise MalformedDicom("an item runs past the end of its sequence")
                offset = self.elements_of_item(value_at, value_at + length, explicit, little, depth)

    def fragments(self, tag: int, tag_at: int, offset: int, little: bool, top: bool) -> int:
        """Encapsulated data (PS3.5 A.4): items of defined length (the first is the Basic
        Offset Table), then a Sequence Delimitation Item."""
        read = self.reader(False, little)
        order = "little" if little else "big"
        pixels = PixelElement(tag, UNDEFINED)
        first = True
        while True:
            self.count()
            data, base = self.source.window(offset, 8)
            if len(data) - (offset - base) < 8:
                raise MalformedDicom("Pixel Data ends before its sequence delimiter")
            item, _, length, value_at = read(offset)
            if item == SEQUENCE_END:
                if top and tag in PIXEL_DATA_TAGS:
                    self.found_pixels(pixels, tag_at)
                return value_at
            if item != ITEM or length == UNDEFINED:
                raise MalformedDicom(f"{tag_text(item)} found among Pixel Data fragments")
            if first and length >= 4:
                data, base = self.source.window(value_at, 4)
                entry = data[value_at - base : value_at - base + 4]
                pixels.first_offset = int.from_bytes(entry, order) if len(entry) == 4 else None
            if not self.source.reaches(value_at + length):
                raise MalformedDicom("Pixel Data truncated inside a fragment")
            if first:
                pixels.offset_table_length = length
                first = False
            else:
                pixels.fragments += 1
            offset = value_at + length
