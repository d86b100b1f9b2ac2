"""The index's header fields read straight from a Part 10 file's bytes, for the write path.

`noctis.dicom.header.parse_instance_header` runs once per received instance; pydicom's
``dcmread`` builds a file meta data set, one element object per attribute and converts values,
a large share of a small instance's C-STORE. This scanner walks the top-level
elements up to Pixel Data and keeps only the raw values of the attributes the index stores.

It answers only for the files it reads exactly as pydicom would, and returns None for anything
else, which pydicom then parses: no preamble, a deflated data set, values that are not plain
ASCII or hold an ISO 2022 escape (the character set would matter), an unexpected VR, an
undefined length it cannot skip, or bytes that end early. A test compares its headers with
pydicom's on pydicom's own test files.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import BinaryIO

PREAMBLE_END = 132  # 128-byte preamble + "DICM"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"

_FIRST_READ = 8192  # most headers end before this; larger ones are read on
PIXEL_DATA = 0x7FE00010
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_VRS = _LONG_VRS | frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT"}
    | {b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)
_TEXT_VRS = frozenset(
    {b"AE", b"AS", b"CS", b"DA", b"DS", b"DT", b"IS", b"LO", b"LT", b"PN", b"SH", b"ST", b"TM"}
    | {b"UC", b"UI"}
)

# Attribute tag -> (keyword, VR): what the index reads; the VR is the dictionary's, used for
# implicit VR and checked against explicit VRs.
WANTED: dict[int, tuple[str, bytes]] = {
    0x00080016: ("SOPClassUID", b"UI"),
    0x00080018: ("SOPInstanceUID", b"UI"),
    0x00080020: ("StudyDate", b"DA"),
    0x00080021: ("SeriesDate", b"DA"),
    0x00080030: ("StudyTime", b"TM"),
    0x00080031: ("SeriesTime", b"TM"),
    0x00080050: ("AccessionNumber", b"SH"),
    0x00080060: ("Modality", b"CS"),
    0x00080090: ("ReferringPhysicianName", b"PN"),
    0x00081030: ("StudyDescription", b"LO"),
    0x0008103E: ("SeriesDescription", b"LO"),
    0x00100010: ("PatientName", b"PN"),
    0x00100020: ("PatientID", b"LO"),
    0x00100021: ("IssuerOfPatientID", b"LO"),
    0x00100030: ("PatientBirthDate", b"DA"),
    0x00100040: ("PatientSex", b"CS"),
    0x00180015: ("BodyPartExamined", b"CS"),
    0x0020000D: ("StudyInstanceUID", b"UI"),
    0x0020000E: ("SeriesInstanceUID", b"UI"),
    0x00200010: ("StudyID", b"SH"),
    0x00200011: ("SeriesNumber", b"IS"),
    0x00200013: ("InstanceNumber", b"IS"),
    0x00280008: ("NumberOfFrames", b"IS"),
    0x00280010: ("Rows", b"US"),
    0x00280011: ("Columns", b"US"),
}


class CannotScan(Exception):
    """Leave this file (or value) to pydicom."""


class ScannedHeader:
    """Raw values by keyword: text as str, US as int; and where Pixel Data starts."""

    def __init__(self, transfer_syntax: str, values: dict[str, str | int], pixels: int | None):
        self.transfer_syntax = transfer_syntax
        self.values = values
        self.pixel_data_offset = pixels


def scan_header(handle: BinaryIO) -> ScannedHeader | None:
    """The index's fields of the Part 10 file open at its start, or None (ask pydicom)."""
    try:
        return _Scanner(handle).scan()
    except (CannotScan, struct.error, UnicodeDecodeError):
        return None


class _Scanner:
    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.data = handle.read(_FIRST_READ)
        self.eof = len(self.data) < _FIRST_READ

    def need(self, end: int) -> None:
        """Make sure bytes up to ``end`` are read."""
        while len(self.data) < end:
            if self.eof:
                raise CannotScan("data ends early")
            more = self.handle.read(max(end - len(self.data), len(self.data)))
            self.eof = not more
            self.data += more

    def scan(self) -> ScannedHeader:
        self.need(PREAMBLE_END)
        if self.data[128:132] != b"DICM":
            raise CannotScan("no preamble")
        offset, syntax = self.file_meta(PREAMBLE_END)
        if not syntax or syntax == DEFLATED:
            raise CannotScan("no transfer syntax, or deflated")
        little = syntax != EXPLICIT_VR_BIG_ENDIAN
        explicit = syntax != IMPLICIT_VR_LITTLE_ENDIAN
        read_element = self.element_reader(explicit=explicit, little=little)
        values: dict[str, str | int] = {}
        while True:
            if offset == len(self.data) and self.eof:
                return ScannedHeader(syntax, values, None)
            tag, vr, length, value_at = read_element(offset)
            if tag == PIXEL_DATA:
                return ScannedHeader(syntax, values, offset)
            if length == _UNDEFINED:
                offset = self.skip_sequence(value_at, self.items_reader(vr, read_element))
                continue
            wanted = WANTED.get(tag)
            if wanted is not None:
                self.need(value_at + length)
                keyword, dictionary_vr = wanted
                if (vr or dictionary_vr) != dictionary_vr:
                    raise CannotScan("unexpected VR")
                raw = self.data[value_at : value_at + length]
                values[keyword] = scanned_value(raw, dictionary_vr, little)
            offset = value_at + length

    def file_meta(self, offset: int) -> tuple[int, str]:
        """Past the File Meta Information (always explicit VR little endian): the data set's
        offset and the transfer syntax."""
        read_element = self.element_reader(explicit=True, little=True)
        syntax = ""
        while True:
            self.need(offset + 8)
            if self.data[offset : offset + 2] != b"\x02\x00":
                return offset, syntax
            tag, _, length, value_at = read_element(offset)
            if length == _UNDEFINED:
                raise CannotScan("undefined length in the file meta")
            self.need(value_at + length)
            if tag == 0x00020010:
                syntax = _text(self.data[value_at : value_at + length])
            offset = value_at + length

    def element_reader(
        self, explicit: bool, little: bool
    ) -> Callable[[int], tuple[int, bytes | None, int, int]]:
        """A function reading the element header at an offset: (tag, VR or None, length,
        offset of the value)."""
        order = "<" if little else ">"
        tag_format = struct.Struct(order + "HH")
        short = struct.Struct(order + "H")
        long = struct.Struct(order + "L")

        def read(offset: int) -> tuple[int, bytes | None, int, int]:
            self.need(offset + 8)
            group, element = tag_format.unpack_from(self.data, offset)
            tag = group << 16 | element
            if not explicit or group == 0xFFFE:  # items and delimiters have no VR
                return tag, None, long.unpack_from(self.data, offset + 4)[0], offset + 8
            vr = bytes(self.data[offset + 4 : offset + 6])
            if vr in _LONG_VRS:
                self.need(offset + 12)
                return tag, vr, long.unpack_from(self.data, offset + 8)[0], offset + 12
            if vr not in _VRS:
                raise CannotScan("not a VR")  # perhaps implicit VR after all: pydicom's call
            return tag, vr, short.unpack_from(self.data, offset + 6)[0], offset + 8

        return read

    def items_reader(
        self, vr: bytes | None, read_element: Callable[[int], tuple[int, bytes | None, int, int]]
    ) -> Callable[[int], tuple[int, bytes | None, int, int]]:
        """How the items of an undefined-length element of ``vr`` are encoded."""
        if vr not in (b"SQ", b"UN", None):
            raise CannotScan("undefined length outside a sequence")
        if vr == b"UN":  # holds implicit VR little endian (PS3.5 6.2.2)
            return self.element_reader(explicit=False, little=True)
        return read_element

    def skip_sequence(
        self, offset: int, read_element: Callable[[int], tuple[int, bytes | None, int, int]]
    ) -> int:
        """Past a sequence of undefined length whose items start at ``offset``."""
        while True:
            tag, _, length, value_at = read_element(offset)
            if tag == _SEQUENCE_END:
                return value_at
            if tag != _ITEM:
                raise CannotScan("not an item")
            if length != _UNDEFINED:
                offset = value_at + length
                continue
            offset = value_at
            while True:  # the item's elements, up to its delimiter
                tag, vr, length, value_at = read_element(offset)
                if tag == _ITEM_END:
                    offset = value_at
                    break
                if length == _UNDEFINED:
                    offset = self.skip_sequence(value_at, self.items_reader(vr, read_element))
                else:
                    offset = value_at + length


def scanned_value(raw: bytes, vr: bytes, little: bool) -> str | int:
    """A raw value of ``vr`` as pydicom would give it; CannotScan if pydicom must decode it."""
    if vr == b"US":
        if len(raw) != 2:
            raise CannotScan("US of another length")
        return int.from_bytes(raw, "little" if little else "big")
    if vr not in _TEXT_VRS:
        raise CannotScan("not a text VR")
    return _text(raw)


def _text(raw: bytes) -> str:
    """A text value as pydicom gives it when the bytes are ASCII (the character set cannot
    change them): NULs dropped, each of several values stripped."""
    if not raw.isascii() or b"\x1b" in raw:
        raise CannotScan("text the character set may change")
    text = raw.decode("ascii").replace("\x00", "")
    if "\\" in text:
        return "\\".join(part.strip() for part in text.split("\\")).strip()
    return text.strip()
