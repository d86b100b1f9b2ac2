"""Reading a stored object's header without holding, or inflating, its pixel data.

A deflated object (transfer syntax 1.2.840.10008.1.2.1.99) has no pixel data offset in the
index -- its pixel data lies somewhere inside one zlib stream -- and pydicom inflates such a
file whole before reading a single attribute: 306 KB of zeros inflate to 300 MB on every
metadata read. Here the object is read in chunks and inflated as the parser asks for bytes,
so reading stops at Pixel Data with at most the header inflated; a header that inflates past
``HEADER_LIMIT`` is refused instead of held.

The inflater is ingest's (`noctis.dicom.inflate`), bounded by the same NOCTIS_MAX_INFLATED_MB:
a stored stream that is corrupt, cut short or inflates past the bound is a damaged stored
object (StoredObjectDamaged, StoredObjectTruncated), never a short answer.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator

from pydicom.dataset import Dataset, FileDataset
from pydicom.filereader import _read_file_meta_info, dcmread, read_dataset, read_preamble
from pydicom.tag import BaseTag

from noctis.dicom.errors import StoredObjectDamaged
from noctis.dicom.inflate import DEFAULT_MAX_INFLATED, InflateError, TruncatedStream
from noctis.dicom.inflate import inflate as _inflate
from noctis.dicom.transcode import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    StoredObjectTruncated,
)

DEFLATED = DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
# A header (everything before Pixel Data) larger than this is not answered from: real ones are
# kilobytes, a few MB with large private blocks or embedded LUTs.
HEADER_LIMIT = 64 << 20
_CHUNK = 1 << 16
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})


class HeaderTooLarge(ValueError):
    """The object's header inflates past HEADER_LIMIT."""


class LazyStream(io.RawIOBase):
    """A seekable, read-only stream over an iterator of chunks, taken only as reads reach
    them and kept (for the parser's seeks back) up to ``limit`` bytes."""

    def __init__(self, chunks: Iterable[bytes], limit: int | None = None) -> None:
        self._chunks = iter(chunks)
        self._buffer = bytearray()
        self._position = 0
        self._limit = limit
        self._ended = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _fill(self, end: int | None) -> None:
        while not self._ended and (end is None or len(self._buffer) < end):
            chunk = next(self._chunks, None)
            if chunk is None:
                self._ended = True
                break
            if self._limit is not None and len(self._buffer) + len(chunk) > self._limit:
                raise HeaderTooLarge(
                    f"the header inflates past {self._limit >> 20} MB before Pixel Data"
                )
            self._buffer += chunk

    def read(self, size: int | None = -1) -> bytes:
        end = None if size is None or size < 0 else self._position + size
        self._fill(end)
        data = bytes(self._buffer[self._position : end])
        self._position += len(data)
        return data

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(target))
        target[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            self._fill(None)
            offset += len(self._buffer)
        elif whence == io.SEEK_CUR:
            offset += self._position
        self._position = max(0, offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def remainder(self) -> Iterator[bytes]:
        """The bytes from the current position on, handed over without being kept here."""
        yield bytes(self._buffer[self._position :])
        self._buffer.clear()
        yield from self._chunks


def inflate(chunks: Iterable[bytes], max_inflated: int = DEFAULT_MAX_INFLATED) -> Iterator[bytes]:
    """A stored object's raw deflate stream (PS3.5 A.5) inflated piece by piece, never more
    than a chunk at a time; StoredObjectTruncated if it is cut short, StoredObjectDamaged if
    it is corrupt or inflates past ``max_inflated`` bytes."""
    try:
        yield from _inflate(chunks, max_inflated, _CHUNK)
    except TruncatedStream as exc:
        raise StoredObjectTruncated(f"the stored object is cut short: {exc}") from exc
    except InflateError as exc:
        raise StoredObjectDamaged(str(exc)) from exc


def read_header_stream(
    chunks: Iterable[bytes], limit: int = HEADER_LIMIT, max_inflated: int = DEFAULT_MAX_INFLATED
) -> tuple[Dataset, bool]:
    """(the data set up to Pixel Data, whether Pixel Data follows) of a Part 10 object given
    as chunks.

    Deflated objects are inflated only as far as their header; others are parsed by pydicom
    directly (reading stops at Pixel Data there too, so their pixels are never parsed)."""
    found: list[int] = []

    def at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
        if int(tag) in _PIXEL_TAGS:
            found.append(int(tag))
            return True
        return False

    raw = LazyStream(chunks)
    preamble = read_preamble(raw, False)
    # pydicom's own file meta reader: public only as a function of a path
    meta = _read_file_meta_info(raw)
    if str(meta.get("TransferSyntaxUID", "")) != DEFLATED:
        raw.seek(0)
        header = dcmread(raw, stop_before_pixels=True)
        return header, False
    inflated = LazyStream(inflate(raw.remainder(), max_inflated), limit)
    dataset = read_dataset(inflated, False, True, stop_when=at_pixel_data)
    header = FileDataset("", dataset, preamble, meta, False, True)
    header.set_original_encoding(False, True, dataset._character_set)
    return header, bool(found)


class ForwardReader:
    """Ranges of a stream that is read once, front to back: what lies between two ranges is
    passed over, never kept, so a frame deep inside 300 MB of inflated pixels costs its own
    size. A few bytes are kept behind, for frames that share a byte or a word."""

    _KEEP = 16

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")
        self._position = 0  # of the first pending byte
        self._behind = b""  # the bytes just before it

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        back = self._position - offset
        if back > 0:
            if back > len(self._behind):
                raise ValueError(f"byte {offset} was passed over (at {self._position})")
            start = len(self._behind) - back
            out += self._behind[start : start + length]
        end = offset + length
        while self._position < end:
            if not self._pending:
                chunk = next(self._chunks, None)
                if chunk is None:
                    raise StoredObjectTruncated(
                        f"the inflated pixel data ends at byte {self._position}; {end} expected"
                    )
                self._pending = memoryview(chunk)
            count = min(len(self._pending), end - self._position)
            start = max(0, offset - self._position)  # pending bytes before the range
            if start < count:
                out += self._pending[start:count]
            self._advance(count)
        return bytes(out)

    def _advance(self, count: int) -> None:
        passed = bytes(self._pending[:count][-self._KEEP :])
        self._behind = (self._behind + passed)[-self._KEEP :]
        self._pending = self._pending[count:]
        self._position += count


def open_deflated_pixels(
    chunks: Iterable[bytes], limit: int = HEADER_LIMIT, max_inflated: int = DEFAULT_MAX_INFLATED
) -> tuple[Dataset, int, ForwardReader] | None:
    """(header, value length, reader at the value's first byte) of a deflated object's
    Pixel Data, inflating only as far as the reads go (at most ``max_inflated`` bytes); None
    when the object is not deflated or has no Pixel Data."""
    raw = LazyStream(chunks)
    preamble = read_preamble(raw, False)
    meta = _read_file_meta_info(raw)
    if str(meta.get("TransferSyntaxUID", "")) != DEFLATED:
        return None
    inflated = LazyStream(inflate(raw.remainder(), max_inflated), limit)
    dataset = read_dataset(
        inflated, False, True, stop_when=lambda tag, vr, length: int(tag) == 0x7FE00010
    )
    element = inflated.read(12)
    if len(element) < 12 or element[:4] != b"\xe0\x7f\x10\x00":
        return None
    length = int.from_bytes(element[8:12], "little")
    header = FileDataset("", dataset, preamble, meta, False, True)
    header.set_original_encoding(False, True, dataset._character_set)
    return header, length, ForwardReader(inflated.remainder())
