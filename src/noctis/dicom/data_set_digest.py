"""SHA-256 of a Part 10 file's data set, computed while the file is written or read.

Duplicates are told apart by this digest: the File Meta Information is the sender's (its
implementation UID and version, a source AE title), so the same instance sent by storescu and
then over STOW-RS would otherwise look like different content. Fed the whole file in pieces
of any size, `DataSetDigest` holds back the first bytes until it has seen where the File Meta
ends (a few hundred bytes), then hashes the rest as it comes: no second pass over the file.

A stream that does not start with a preamble and "DICM", or whose File Meta it cannot walk,
is hashed whole (ingest refuses such a file anyway).
"""

from __future__ import annotations

import hashlib
import struct

_PREAMBLE_END = 132
_MAX_HEAD = 64 * 1024  # File Meta longer than this: hash the whole file
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_UNDEFINED = 0xFFFFFFFF
_WHOLE = 0  # "hash from the first byte"


def data_set_start(head: bytes | bytearray, *, complete: bool = False) -> int | None:
    """Where the data set starts in a Part 10 file beginning with ``head``: after the File Meta
    group (explicit VR little endian, PS3.10 7.1); 0 when ``head`` is not such a file; None when
    more bytes are needed (``complete``: ``head`` is the whole file)."""
    if len(head) < _PREAMBLE_END:
        return _WHOLE if complete else None
    if head[128:132] != b"DICM":
        return _WHOLE
    offset = _PREAMBLE_END
    while True:
        if len(head) < offset + 8:
            if complete:
                return offset if len(head) == offset else _WHOLE
            return None
        group, _element = struct.unpack_from("<HH", head, offset)
        if group != 0x0002:
            return offset
        vr = bytes(head[offset + 4 : offset + 6])
        if vr in _LONG_VRS:
            if len(head) < offset + 12:
                return _WHOLE if complete else None
            (length,) = struct.unpack_from("<L", head, offset + 8)
            if length == _UNDEFINED:
                return _WHOLE
            offset += 12 + length
        else:
            (length,) = struct.unpack_from("<H", head, offset + 6)
            offset += 8 + length


class DataSetDigest:
    """hashlib-like: ``update`` with the file's bytes in order, then ``hexdigest``."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._head: bytearray | None = bytearray()  # None once the data set is being hashed

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._head is None:
            self._digest.update(data)
            return
        self._head += data
        start = data_set_start(self._head)
        if start is None and len(self._head) > _MAX_HEAD:
            start = _WHOLE
        if start is not None:
            self._start_at(start)

    def hexdigest(self) -> str:
        if self._head is not None:
            start = data_set_start(self._head, complete=True)
            self._start_at(_WHOLE if start is None else start)
        return self._digest.hexdigest()

    def _start_at(self, start: int) -> None:
        head, self._head = self._head, None
        assert head is not None
        self._digest.update(memoryview(head)[start:])
