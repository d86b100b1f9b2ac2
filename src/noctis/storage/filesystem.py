"""Filesystem object store: the embedded default.

Objects are written to a temporary file in the same directory, fsynced, then renamed into
place, so a reader never sees a half-written object and a crash leaves no partial one.
Incoming instances (`incoming()`) are spooled to a file in the store's spool directory, which
a commit links into place (the bytes are written once, when both are on one filesystem, as in
embedded mode): the link is made first, then the file and its directory are synced together,
and only then does the caller write the index (so a crash can leave an unreferenced name,
never an index row without its data).

A file's own fsync does not make its name durable: after a power loss the directory may not
list it. So the directory that gets the new name is fsynced before ``put`` returns, and so is
the parent of every directory made for it (a new study's and series' directories).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, TypeVar

from noctis.storage.base import ObjectNotFound, StorageUnavailable, StoredObject, check_key
from noctis.storage.incoming import IncomingObject

_COPY_CHUNK = 1 << 20
# Attempts at making a name in a directory that a deletion's sweep may remove meanwhile.
_DIRECTORY_ATTEMPTS = 5
_Made = TypeVar("_Made")


class FilesystemStore:
    """Objects under ``root``; incoming instances spooled in ``spool_dir`` (None: the system's
    temporary directory), which should be on the same filesystem: otherwise a commit copies."""

    def __init__(self, root: Path, *, spool_dir: Path | None = None, fsync: bool = True) -> None:
        self.root = Path(root)
        self.spool_dir = Path(spool_dir or tempfile.gettempdir())
        self.fsync = fsync
        # fsyncs of the directories that get new names, beside the file's own (a commit)
        # (threads start only as concurrent stores need them: one per store at most)
        self._directory_syncs = ThreadPoolExecutor(max_workers=64, thread_name_prefix="noctis-dir")
        self.root.mkdir(parents=True, exist_ok=True)
        self.spool_dir.mkdir(parents=True, exist_ok=True)

    def incoming(self) -> IncomingObject:
        return _LinkedIncoming(self)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, stream: BinaryIO, length: int) -> None:
        target = self._path(key)
        fd, tmp = self._in_directory(
            target.parent, lambda: tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        )
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

    def _commit_file(self, key: str, spooled: _LinkedIncoming) -> None:
        """Link the complete spooled file under ``key``, then make both its data and its new
        name durable at once: the file's fsync here and its directory's in another thread,
        so that the file system commits them together (one after the other cost 16-20% of the
        CT ingest rate). Until both return the object is only a name the index does not know
        (the index is written after this returns): a crash may leave it for a sweep, never an
        index row pointing at data that was not on disk (the consistency check removes such
        names, `noctis.core.consistency`)."""
        target = self._path(key)
        # The file is complete: its link appears whole, no temporary name needed.
        try:
            self._in_directory(target.parent, lambda: os.link(spooled.path, target))
        except FileExistsError:
            raise
        except OSError:  # another filesystem, or links not supported: copy
            handle = spooled.reader()
            handle.seek(0)
            self.put(key, handle, spooled.size)
            return
        if not self.fsync:
            return
        try:
            directory = self._directory_syncs.submit(self._sync_directory, target.parent)
            os.fsync(spooled.fileno())
            directory.result()
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    def _in_directory(self, directory: Path, make: Callable[[], _Made]) -> _Made:
        """``make`` a name in ``directory``, making the directory first when it is missing.
        A deletion's sweep removes the directories it empties (``purge``): one may vanish
        between being made and the name appearing in it, so that is tried a few times."""
        for _ in range(_DIRECTORY_ATTEMPTS - 1):
            try:
                return make()
            except FileNotFoundError:
                self._make_directories(directory)
        return make()

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

    def purge(self, key: str) -> None:
        """The file (no versions here), then the directories it leaves empty (a deleted
        study's and series'). A store making a file in such a directory at that moment finds
        it gone and makes it again (``_in_directory``)."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        directory = path.parent
        while directory != self.root:
            try:
                directory.rmdir()
            except OSError:  # not empty (or already gone): the rest of the way up is in use
                break
            directory = directory.parent

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        # Walk only the directory the prefix names (a key prefix ending mid-name walks its parent).
        start = self.root / prefix.rpartition("/")[0] if prefix else self.root
        for directory, _dirs, names in os.walk(start):
            for name in names:
                if name.startswith(".incoming-"):  # a put in progress, not an object yet
                    continue
                path = Path(directory, name)
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    stat = path.stat()
                except FileNotFoundError:  # removed while we walked
                    continue
                modified = datetime.fromtimestamp(stat.st_mtime, UTC)
                yield StoredObject(key, stat.st_size, modified)

    def retained_until(self, key: str) -> datetime | None:
        return None  # a filesystem has no object lock

    def check(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK):
            raise StorageUnavailable(f"object directory {self.root} is missing or not writable")
        usage = shutil.disk_usage(self.root)
        if usage.free < 64 << 20:
            raise StorageUnavailable(f"object directory {self.root} has under 64 MiB free")


class _LinkedIncoming(IncomingObject):
    """A named file in the store's spool directory, open for writing and reading back, that
    a commit links into place; closing removes its spool name (a committed object keeps its
    own)."""

    def __init__(self, store: FilesystemStore) -> None:
        fd, name = tempfile.mkstemp(dir=store.spool_dir, prefix="incoming-")
        # Buffered (a data set fragment is written through whole), and readable: ingest reads
        # the header through this handle, no second open by name (which waits on the spool
        # directory other receivers are busy creating and removing files in).
        super().__init__(os.fdopen(fd, "w+b"))
        self.path = Path(name)
        self._store = store
        self._closed = False

    def fileno(self) -> int:
        return self._spool.fileno()

    def commit(self, key: str) -> None:
        self.finish()
        self._store._commit_file(key, self)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):  # unwritten bytes of a discarded file: no matter
            self._spool.close()
        self.path.unlink(missing_ok=True)


def _copy_exactly(source: BinaryIO, target: BinaryIO, length: int) -> int:
    remaining = length
    while remaining > 0:
        chunk = source.read(min(_COPY_CHUNK, remaining))
        if not chunk:
            break
        target.write(chunk)
        remaining -= len(chunk)
    return length - remaining
