"""Object storage: one small interface, a filesystem and an S3 backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

from noctis.storage.base import (
    ObjectNotFound,
    ObjectStore,
    StorageUnavailable,
    StoredObject,
    check_key,
)
from noctis.storage.incoming import IncomingObject

if TYPE_CHECKING:
    from noctis.settings import Settings

__all__ = [
    "IncomingObject",
    "ObjectNotFound",
    "ObjectStore",
    "StorageUnavailable",
    "StoredObject",
    "check_key",
    "open_store",
]


def open_store(settings: Settings) -> ObjectStore:
    """The object store the settings name, with the storage pools they name beside it
    (`noctis.storage.pools`)."""
    from noctis.storage.pools import with_pools

    return with_pools(settings, _open_default_store(settings))


def _open_default_store(settings: Settings) -> ObjectStore:
    if settings.storage_backend == "s3":
        from noctis.storage.s3 import S3Store

        return S3Store.from_settings(settings)
    from noctis.storage.filesystem import FilesystemStore

    return FilesystemStore(
        settings.resolved_storage_path(), spool_dir=settings.resolved_spool_dir()
    )
