"""The object store interface: five verbs, whatever the backend, and a writer for incoming
instances (`noctis.storage.incoming`).

Keys are ``/``-separated relative paths (``facility/study/series/instance.dcm``).
``put`` and a commit of incoming data are durable when they return; ``delete`` of a missing
key is not an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, BinaryIO, Protocol, runtime_checkable

if TYPE_CHECKING:
    from noctis.storage.incoming import IncomingObject

_KEY = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


@dataclass(frozen=True)
class StoredObject:
    """One object as a listing shows it."""

    key: str
    size: int
    modified: datetime  # timezone-aware


class ObjectNotFound(KeyError):
    """The key names no object."""


class StorageUnavailable(OSError):
    """The backend could not be reached or refused the operation."""


def check_key(key: str) -> str:
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"invalid object key: {key!r}")
    return key


@runtime_checkable
class ObjectStore(Protocol):
    def incoming(self) -> IncomingObject:
        """A writer for one instance being received, spooled where this store commits it
        from at least cost (OSError if the spool cannot be made)."""

    def put(self, key: str, stream: BinaryIO, length: int) -> None:
        """Store ``length`` bytes read from ``stream`` under ``key``; durable on return."""

    def get(self, key: str) -> bytes:
        """The whole object. Raises ObjectNotFound."""

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The object in chunks, for streaming responses. Raises ObjectNotFound."""

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer at the end of the object)."""

    def delete(self, key: str) -> None:
        """Remove the object; no error if it does not exist."""

    def exists(self, key: str) -> bool: ...

    def purge(self, key: str) -> None:
        """Remove the object for good: every version of it in a versioned bucket (a plain
        ``delete`` there only adds a delete marker). No error if it does not exist;
        StorageUnavailable if the store refuses (an object lock)."""

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        """Every object whose key starts with ``prefix`` (``""``: all), in no set order."""

    def retained_until(self, key: str) -> datetime | None:
        """When the store's object lock stops protecting the object; None if it does not
        (or no longer does)."""

    def check(self) -> None:
        """Raise StorageUnavailable unless the store is reachable and writable."""
