"""Forward byte windows over a received data set, for the structural walk.

The walk reads element headers and seeks over values, so a source hands out small windows at
increasing offsets and says whether an offset exists at all. `FileSource` seeks in the file (a
named file or an in-memory/unnamed one: `noctis.ingest.Received.opened`) and never reads the
values it skips; `InflatingSource` inflates a deflated data set (PS3.5 A.5) piece by piece,
discarding what the walk has passed, and refuses to inflate past a cap: memory stays at a few
hundred KB whatever the stream expands to.
"""

from __future__ import annotations

import zlib
from typing import BinaryIO

from noctis.dicom.errors import MalformedDicom

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
    forward only; MalformedDicom once more than ``limit`` bytes would come out."""

    def __init__(self, handle: BinaryIO, start: int, limit: int) -> None:
        handle.seek(start)
        self.handle = handle
        self.limit = limit
        self.inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self.data = bytearray()
        self.base = 0
        self.produced = 0  # inflated bytes so far: base + len(data)
        self.finished = False

    def _inflate(self) -> None:
        """Inflate one more piece onto ``data``; sets ``finished`` at the end of the stream."""
        if self.inflater.eof:
            self.finished = True
            return
        pending = self.inflater.unconsumed_tail
        if not pending:
            pending = self.handle.read(_INFLATE_IN)
            if not pending:
                # zlib reports no error for a stream that just stops: say it ourselves.
                raise MalformedDicom("deflated data set ends inside its compressed stream")
        try:
            out = self.inflater.decompress(pending, _INFLATE_OUT)
        except zlib.error as exc:
            raise MalformedDicom(f"deflated data set cannot be inflated: {exc}") from exc
        self.produced += len(out)
        if self.produced > self.limit:
            raise MalformedDicom(f"inflated data set exceeds the {self.limit >> 20} MiB limit")
        self.data += out

    def _drop_before(self, offset: int) -> None:
        if offset > self.base:
            del self.data[: min(offset - self.base, len(self.data))]
            self.base = min(offset, self.produced)

    def window(self, offset: int, need: int) -> tuple[bytes, int]:
        if offset < self.base:
            raise ValueError("an inflating source reads forward only")
        self._drop_before(offset)
        while self.produced < offset + need and not self.finished:
            self._inflate()
            self._drop_before(offset)
        if offset > self.produced:
            return b"", offset
        return bytes(self.data[offset - self.base : offset - self.base + max(need, _READ)]), offset

    def reaches(self, offset: int) -> bool:
        self._drop_before(offset)
        while self.produced < offset and not self.finished:
            self._inflate()
            self._drop_before(offset)
        return offset <= self.produced

    def at_end(self, offset: int) -> bool:
        data, base = self.window(offset, 1)
        return len(data) <= offset - base
