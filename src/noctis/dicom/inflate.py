"""The one streaming inflater of deflated data sets (PS3.5 A.5: raw deflate, no zlib header),
for ingest's structural walk and for the read side alike.

It inflates piece by piece, never more than ``piece`` bytes at once (a bomb's burst), and
raises instead of answering with less than the stream holds:

- a corrupt stream (zlib refuses it): `CorruptStream`;
- a stream that stops before its final block ends (zlib itself reports nothing: its
  decompressor just waits for more): `TruncatedStream`;
- more than ``limit`` inflated bytes (NOCTIS_MAX_INFLATED_MB): `InflatedTooLarge`.

Each side says what that means for its caller: ingest refuses the input (MalformedDicom),
the read side reports a damaged stored object. What follows the end of the stream (pydicom
pads it to an even length) is not data and is ignored.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

DEFAULT_MAX_INFLATED = 512 << 20  # NOCTIS_MAX_INFLATED_MB's default
PIECE = 256 << 10  # inflated bytes produced at once


class InflateError(ValueError):
    """The deflated stream cannot be inflated whole within its bound."""


class CorruptStream(InflateError):
    def __init__(self, error: zlib.error) -> None:
        # "Error -3 while decompressing data: invalid block type" -> "invalid block type"
        self.detail = str(error).rsplit(": ", 1)[-1]
        super().__init__(f"the deflated stream is corrupt: {self.detail}")


class TruncatedStream(InflateError):
    def __init__(self) -> None:
        super().__init__("the deflated stream ends before its last block")


class InflatedTooLarge(InflateError):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"the deflated stream inflates past the {limit >> 20} MiB limit")


def inflate(chunks: Iterable[bytes], limit: int, piece: int = PIECE) -> Iterator[bytes]:
    """The inflated bytes of the raw deflate stream given as ``chunks``, in pieces of at
    most ``piece`` bytes; InflateError as above."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    produced = 0

    def run(data: bytes) -> Iterator[bytes]:
        """What ``data`` inflates to, and what the inflater still holds from before."""
        nonlocal produced
        while not inflater.eof:
            try:
                out = inflater.decompress(data, piece)
            except zlib.error as exc:
                raise CorruptStream(exc) from exc
            produced += len(out)
            if produced > limit:
                raise InflatedTooLarge(limit)
            if out:
                yield out
            data = inflater.unconsumed_tail
            if not data and len(out) < piece:
                return  # it needs more input

    for chunk in chunks:
        yield from run(chunk)
        if inflater.eof:
            return
    yield from run(b"")  # what it may hold back at the end of the input
    if not inflater.eof:
        raise TruncatedStream
