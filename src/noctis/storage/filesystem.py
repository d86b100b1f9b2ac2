"""Filesystem object store: the embedded default.

Objects are written to a temporary file in the same directory, fsynced, then renamed into
place, so a reader never sees a half-written object and a crash leaves no partial one.
``put_file`` links the caller's file instead of copying it when both are on one filesystem (a
received instance spooled next to the objects, as in embedded mode): the bytes are written once;
the link is made first, then the file and its directory are synced together, and only then
does the caller write the index (so a crash can leave an unreferenced name, never an index row
without its data).

A file's own fsync does not make its name durable: after a power loss the directory may not
list it. So the directory that gets the new name is fsynced before ``put`` returns, and so is
the parent of every directory made for it (a new study's and series' directories).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from noctis.storage.base import ObjectNotFound, StorageUnavailable, check_key

_COPY_CHUNK = 1 << 20


class FilesystemStore:
    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.adopts_files = True
        # fsyncs of the directories that get new names, beside the file's own (put_file)
        # (threads start only as concurrent stores need them: one per store at most)
        self._directory_syncs = ThreadPoolExecutor(max_workers=64, thread_name_prefix="noctis-dir")
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, stream: BinaryIO, length: int) -> None:
        target = self._path(key)
        self._make_directories(target.parent)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                written = _copy_exactly(stream, out, length)
                if written != length:
                    raise ValueError(f"stream ended after {written} of {length} bytes")
                if self.fsync:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._sync_directory(target.parent)

    def put_file(self, key: str, path: Path, length: int) -> None:
        """Link the caller's complete file under ``key``, then make both its data and its new
        name durable at once: the file's fsync here and its directory's in another thread,
        so that the file system commits them together (one after the other cost 16-20% of the
        CT ingest rate). Until both return the object is only a name the index does not know
        (the index is written after this returns): a crash may leave it for a sweep, never an
        index row pointing at data that was not on disk (no sweep removes such names yet:
        issue 14)."""
        target = self._path(key)
        size = os.stat(path).st_size
        if size != length:
            raise ValueError(f"file holds {size} bytes, expected {length}")
        # The file is complete: its link appears whole, no temporary name needed.
        try:
            try:
                os.link(path, target)
            except FileNotFoundError:
                self._make_directories(target.parent)
                os.link(path, target)
        except FileExistsError:
            raise
        except OSError:  # another filesystem, or links not supported: copy
            with open(path, "rb") as stream:
                self.put(key, stream, length)
            return
        if not self.fsync:
            return
        try:
            directory = self._directory_syncs.submit(self._sync_directory, target.parent)
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            directory.result()
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    def _make_directories(self, directory: Path) -> None:
        """Make ``directory`` and any missing parent, each new name durable in its parent."""
        missing: list[Path] = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for made in reversed(missing):
            # A concurrent store of the same study may have made it: its name is synced here
            # too, as this store's object will be reached through it.
            made.mkdir(exist_ok=True)
            self._sync_directory(made.parent)

    def _sync_directory(self, directory: Path) -> None:
        if not self.fsync:
            return
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc
        with handle:
            while chunk := handle.read(chunk_size):
                yield chunk

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be non-negative")
        try:
            with self._path(key).open("rb") as handle:
                handle.seek(offset)
                return handle.read(length)
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def check(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK):
            raise StorageUnavailable(f"object directory {self.root} is missing or not writable")
        usage = shutil.disk_usage(self.root)
        if usage.free < 64 << 20:
            raise StorageUnavailable(f"object directory {self.root} has under 64 MiB free")


def _copy_exactly(source: BinaryIO, target: BinaryIO, length: int) -> int:
    remaining = length
    while remaining > 0:
        chunk = source.read(min(_COPY_CHUNK, remaining))
        if not chunk:
            break
        target.write(chunk)
        remaining -= len(chunk)
    return length - remaining
