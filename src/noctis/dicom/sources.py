"""Forward byte windows over a received data set, for the structural walk.

The walk reads element headers and seeks over values, so a source hands out small windows at
increasing offsets and says whether an offset exists at all. `FileSource` seeks in the file (a
named file or an in-memory/unnamed one: `noctis.storage.IncomingObject.reader`) and never reads
the values it skips; `InflatingSource` inflates a deflated data set (PS3.5 A.5) piece by piece
(`noctis.dicom.inflate`, the inflater the read side uses too), discarding what the walk has
passed, and refuses a corrupt or cut stream and one inflating past a cap: memory stays at a
few hundred KB whatever the stream expands to.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from noctis.dicom.errors import MalformedDicom
from noctis.dicom.inflate import CorruptStream, InflatedTooLarge, TruncatedStream, inflate

_READ = 8192  # what one read of the file brings: most headers end before this
_READ_AFTER_SKIP = 512  # after seeking over a value: an element header, not more pixels
_INFLATE_IN = 64 << 10  # compressed bytes fed to the inflater at once
_INFLATE_OUT = 256 << 10  # inflated bytes it may produce at once (bounds a bomb's burst)


class FileSource:
    """A seekable file from ``start`` to its end."""

    def __init__(self, handle: BinaryIO, start: int) -> None:
        self.end = handle.seek(0, 2)
        self.handle = handle
        self.data = b""
        self.base = start  # the offset of data[0]

    def window(self, offset: int, need: int) -> tuple[bytes, int]:
        """Bytes from at least ``offset`` to ``offset + need`` (fewer only at the end) and the
        offset of their first byte."""
        data, base = self.data, self.base
        if base <= offset and offset + need <= base + len(data):
            return data, base
        if offset >= self.end:
            return b"", offset
        size = _READ if offset == base + len(data) else _READ_AFTER_SKIP
        self.handle.seek(offset)
        self.data = self.handle.read(max(need, size))
        self.base = offset
        return self.data, offset

    def reaches(self, offset: int) -> bool:
        """Whether the data set holds bytes up to ``offset`` (exclusive)."""
        return offset <= self.end

    def at_end(self, offset: int) -> bool:
        return offset >= self.end


class InflatingSource:
    """The inflated bytes of a deflated data set starting at ``start`` of ``handle``, read
    forward only; MalformedDicom once more than ``limit`` bytes would come out.

    ``data`` holds inflated bytes from offset ``base`` up to ``produced``; what the walk has
    passed is dropped in large steps (dropping a few bytes per element was the walk's main
    cost), and inflated pieces wholly before the next offset wanted are never kept.
    """

    def __init__(self, handle: BinaryIO, start: int, limit: int) -> None:
        handle.seek(start)
        compressed = iter(lambda: handle.read(_INFLATE_IN), b"")
        self.pieces: Iterator[bytes] = inflate(compressed, limit, _INFLATE_OUT)
        self.limit = limit
        self.data = bytearray()
        self.base = 0
        self.produced = 0  # inflated bytes so far: base + len(data)
        self.finished = False

    def _inflate(self) -> bytes:
        """The next inflated piece (empty at the end of the stream, which sets finished)."""
        try:
            out = next(self.pieces, b"")
        except TruncatedStream as exc:
            raise MalformedDicom("deflated data set ends inside its compressed stream") from exc
        except CorruptStream as exc:
            raise MalformedDicom(f"deflated data set is corrupt: {exc.detail}") from exc
        except InflatedTooLarge as exc:
            limit = exc.limit >> 20
            raise MalformedDicom(f"inflated data set exceeds the {limit} MiB limit") from exc
        if not out:
            self.finished = True
        self.produced += len(out)
        return out

    def _cover(self, offset: int, upto: int) -> None:
        """Hold the inflated bytes from ``offset`` to ``upto`` (as far as the stream goes),
        dropping what lies before ``offset``."""
        if offset < self.base:
            raise ValueError("an inflating source reads forward only")
        if offset >= self.produced:
            self.data.clear()
            self.base = self.produced
        elif offset - self.base > _INFLATE_OUT:
            del self.data[: offset - self.base]
            self.base = offset
        while self.produced < upto and not self.finished:
            out = self._inflate()
            start = self.produced - len(out)  # the offset of out[0]
            if self.produced <= offset:  # wholly before what is wanted: data is empty
                self.base = self.produced
            elif start < offset:
                self.data += out[offset - start :]
                self.base = offset
            else:
                self.data += out

    def window(self, offset: int, need: int) -> tuple[bytes, int]:
        self._cover(offset, offset + need)
        # A copy of what was asked for, no more: the walk asks for an element header at a time.
        at = offset - self.base
        return bytes(self.data[at : at + need]), offset

    def reaches(self, offset: int) -> bool:
        self._cover(offset, offset)
        return offset <= self.produced

    def at_end(self, offset: int) -> bool:
        self._cover(offset, offset + 1)
        return self.produced <= offset
