"""multipart/related for DICOMweb: media types, Accept negotiation, writing and reading bodies.

Writing follows what strict clients (OHIF's frame parser) expect: the body starts with
``--boundary\\r\\n``, each part header is spelled ``Content-Type:``, and parts are separated by
``\\r\\n--boundary``. Reading (STOW-RS) streams each part into a file, so a large upload is never
held in memory.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO


class MultipartError(ValueError):
    """The body is not a well-formed multipart message."""


@dataclass(frozen=True)
class MediaType:
    type: str  # lower case, e.g. "multipart/related"
    params: dict[str, str] = field(default_factory=dict)  # keys lower case, values unquoted
    q: float = 1.0

    def param(self, name: str, default: str | None = None) -> str | None:
        return self.params.get(name, default)


def _split(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_media_type(text: str) -> MediaType:
    pieces = _split(text, ";")
    main = pieces[0].strip().lower()
    params: dict[str, str] = {}
    q = 1.0
    for piece in pieces[1:]:
        name, _, value = piece.partition("=")
        name, value = name.strip().lower(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if not name:
            continue
        if name == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
            continue
        params[name] = value
    return MediaType(main, params, q)


def parse_accept(header: str | None) -> list[MediaType]:
    """The Accept header's media ranges, most preferred first; ``*/*`` when absent."""
    if not header or not header.strip():
        return [MediaType("*/*")]
    ranges = [parse_media_type(item) for item in _split(header, ",") if item.strip()]
    ranges = [r for r in ranges if r.q > 0 and "/" in r.type]
    return sorted(ranges, key=lambda r: -r.q)


def accepts_any(ranges: list[MediaType], *types: str) -> bool:
    """Whether a plain (non-multipart) response of one of ``types`` is acceptable."""
    for media in ranges:
        if media.type in ("*/*", *types):
            return True
        major = media.type.split("/")[0]
        if media.type.endswith("/*") and any(t.startswith(major + "/") for t in types):
            return True
    return False


class MultipartWriter:
    """Frames the parts of one multipart/related response."""

    def __init__(self, part_type: str) -> None:
        self.boundary = uuid.uuid4().hex
        self.part_type = part_type

    @property
    def content_type(self) -> str:
        return f'multipart/related; type="{self.part_type}"; boundary={self.boundary}'

    def head(self, content_type: str | None = None, length: int | None = None) -> bytes:
        lines = [f"--{self.boundary}", f"Content-Type: {content_type or self.part_type}"]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")

    def part(self, body: bytes, content_type: str | None = None) -> bytes:
        return self.head(content_type, len(body)) + body + b"\r\n"

    def end(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode("ascii")

    def message(self, bodies: Sequence[tuple[bytes, str | None]]) -> bytes:
        pieces: list[bytes] = []
        for body, content_type in bodies:  # one copy of each body (frames are ~0.5 MB)
            pieces += (self.head(content_type, len(body)), body, b"\r\n")
        pieces.append(self.end())
        return b"".join(pieces)


@dataclass
class SpooledPart:
    headers: dict[str, str]  # lower-case names
    path: Path
    size: int = 0

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


_MAX_HEADER_BYTES = 16 * 1024
_MAX_PARTS = 10_000


async def spool_parts(
    chunks: AsyncIterator[bytes],
    boundary: str,
    directory: Path,
) -> list[SpooledPart]:
    """Read a multipart body into one temporary file per part.

    Raises MultipartError (and removes the files) unless the body is complete: every part
    framed by the boundary and the closing delimiter present.
    """
    if not boundary or len(boundary) > 70:
        raise MultipartError("the boundary parameter is missing or longer than 70 characters")
    directory.mkdir(parents=True, exist_ok=True)
    reader = _Reader(boundary.encode("latin-1"), directory)
    try:
        async for chunk in chunks:
            reader.feed(chunk)
        reader.finish()
    except BaseException:
        reader.discard()
        raise
    return reader.parts


class _Reader:
    """A push parser: preamble, then (headers, body) per part, then the closing delimiter."""

    def __init__(self, boundary: bytes, directory: Path) -> None:
        self.first = b"--" + boundary
        self.delimiter = b"\r\n--" + boundary
        self.directory = directory
        self.buffer = bytearray(b"\r\n")  # lets the first delimiter match like the others
        self.state = "preamble"
        self.parts: list[SpooledPart] = []
        self.handle: BinaryIO | None = None

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        while self._step():
            pass

    def _step(self) -> bool:
        if self.state == "preamble":
            index = self.buffer.find(self.delimiter)
            if index < 0:
                del self.buffer[: max(0, len(self.buffer) - len(self.delimiter))]
                return False
            del self.buffer[: index + len(self.delimiter)]
            self.state = "after-delimiter"
            return True
        if self.state == "after-delimiter":
            if len(self.buffer) < 2:
                return False
            if self.buffer[:2] == b"--":
                self.state = "done"
                self.buffer.clear()
                return False
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                if len(self.buffer) > 256:
                    raise MultipartError("garbage after a boundary delimiter")
                return False
            if self.buffer[:line_end].strip(b" \t"):
                raise MultipartError("garbage after a boundary delimiter")
            del self.buffer[: line_end + 2]
            self.state = "headers"
            return True
        if self.state == "headers":
            end = self.buffer.find(b"\r\n\r\n")
            if self.buffer.startswith(b"\r\n"):
                end, skip = 0, 2  # a part without headers
            else:
                skip = 4
            if end < 0:
                if len(self.buffer) > _MAX_HEADER_BYTES:
                    raise MultipartError("a part's headers are too long")
                return False
            headers = _parse_headers(bytes(self.buffer[:end]))
            del self.buffer[: end + skip]
            self._open(headers)
            self.state = "body"
            return True
        if self.state == "body":
            index = self.buffer.find(self.delimiter)
            if index < 0:
                keep = len(self.delimiter) - 1
                if len(self.buffer) > keep:
                    self._write(bytes(self.buffer[: len(self.buffer) - keep]))
                    del self.buffer[: len(self.buffer) - keep]
                return False
            self._write(bytes(self.buffer[:index]))
            del self.buffer[: index + len(self.delimiter)]
            self._close()
            self.state = "after-delimiter"
            return True
        if self.state == "done":
            self.buffer.clear()  # the epilogue is ignored
        return False

    def _open(self, headers: dict[str, str]) -> None:
        if len(self.parts) >= _MAX_PARTS:
            raise MultipartError(f"more than {_MAX_PARTS} parts")
        fd, name = tempfile.mkstemp(dir=self.directory, prefix="stow-", suffix=".part")
        self.handle = os.fdopen(fd, "wb")
        self.parts.append(SpooledPart(headers, Path(name)))

    def _write(self, data: bytes) -> None:
        if data and self.handle is not None:
            self.handle.write(data)
            self.parts[-1].size += len(data)

    def _close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def finish(self) -> None:
        if self.state == "preamble":
            raise MultipartError("the body contains no boundary delimiter")
        if self.state != "done":
            raise MultipartError("the body ends before the closing boundary delimiter")
        if not self.parts:
            raise MultipartError("the body has no parts")

    def discard(self) -> None:
        self._close()
        for part in self.parts:
            part.path.unlink(missing_ok=True)


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise MultipartError(f"malformed part header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers
