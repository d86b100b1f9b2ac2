"""Incoming data: an instance being received for the store, before it has a key.

Every writer of instances (the DIMSE fast path, the pynetdicom fallback handler, STOW-RS) asks
the store for an `IncomingObject` (`ObjectStore.incoming()`), writes the Part 10 bytes into it
as they arrive, and hands it to `noctis.core.ingest`, which reads it back (the structural
check, the header), compares its digest with what the index holds and, if it is kept, commits
it under a key. Closing it without a commit discards it: nothing is left behind.

Where the bytes wait is the backend's business: the filesystem store spools them to a file in
its spool directory that it links into place on commit (no copy), a store that copies the data
anyway (S3) keeps them in memory and beyond `IN_MEMORY_LIMIT` in an unnamed file
(`SpooledIncoming`).

The digest is that of the data set (`noctis.dicom.data_set_digest`: the sender's File Meta
excluded), computed as the bytes are written: duplicates are told apart by it, and nothing
reads the data a second time to hash it.
"""

from __future__ import annotations

import contextlib
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Final, Self, cast

from noctis.dicom.data_set_digest import DataSetDigest

if TYPE_CHECKING:
    from noctis.storage.base import ObjectStore

# With max_associations at 32, in-memory spools hold at most 128 MiB.
IN_MEMORY_LIMIT: Final = 4 << 20
_COPY_CHUNK: Final = 1 << 20


class IncomingObject(ABC):
    """One instance being received: written in chunks, then read back, committed or dropped.

    Used by one thread at a time. ``size`` and ``sha256`` describe what was written so far,
    so they are final once the last chunk is written.
    """

    def __init__(self, spool: BinaryIO) -> None:
        self._spool = spool
        self._digest = DataSetDigest()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``; OSError if it cannot be spooled (a full disk)."""
        self._spool.write(data)
        self._digest.update(data)
        self.size += len(data)

    def write_from(self, stream: BinaryIO) -> None:
        """Append everything ``stream`` holds from its position on."""
        while chunk := stream.read(_COPY_CHUNK):
            self.write(chunk)

    @property
    def sha256(self) -> str:
        """SHA-256 of the data set written (File Meta excluded), as a hex string."""
        return self._digest.hexdigest()

    def finish(self) -> None:
        """Every byte is written: push them to the spool (OSError if that fails)."""
        self._spool.flush()

    def reader(self) -> BinaryIO:
        """The bytes written, readable and seekable (callers seek before they read): the
        spool itself, so no second open by name."""
        self.finish()
        return self._spool

    @abstractmethod
    def commit(self, key: str) -> None:
        """Store the bytes under ``key``; durable on return (StorageUnavailable, OSError or
        ValueError if not). Once only; the object may still be closed afterwards."""

    @abstractmethod
    def close(self) -> None:
        """Release the spool: without a commit, the bytes are gone. Idempotent; raises no
        OSError (what was not written yet no longer matters)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class SpooledIncoming(IncomingObject):
    """For a store that copies the data to its server anyway (S3): memory, then beyond
    ``memory_limit`` an unnamed file in ``spool_dir`` (None: the system's temporary
    directory); no file to create by name, read back and remove."""

    def __init__(
        self, store: ObjectStore, spool_dir: Path | None, memory_limit: int | None = None
    ) -> None:
        limit = IN_MEMORY_LIMIT if memory_limit is None else memory_limit
        spool = tempfile.SpooledTemporaryFile(max_size=limit, dir=spool_dir)  # noqa: SIM115 (closed by close)
        super().__init__(cast(BinaryIO, spool))
        self._store = store

    def commit(self, key: str) -> None:
        self._spool.flush()
        self._spool.seek(0)
        self._store.put(key, self._spool, self.size)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._spool.close()
