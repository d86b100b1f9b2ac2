"""Storage pools: one object store per StoragePool, behind the one ObjectStore interface.

A facility's instances land in the pool it names (`storagePool`); the Archive's own pool is the
default store. Where an object lives is written into its key, not kept beside it: an object of
another pool than the default has the key ``_pools/<pool>/<its key in that pool>``. So every
reader (WADO, C-GET/C-MOVE, metadata bundles, rendered, deletion) opens it through the same
``runtime.store.get(key)`` as before, with nothing more to look up, and an object never
changes pool unnoticed: the index row says where it is. (A facility name cannot begin with
``_``: no plain key is ever taken for a pool's.) Inside its own bucket or directory the object
keeps the usual ``facility/study/series/instance`` key.

Keys without the prefix are the default store's, so everything stored before pools existed,
and every derived object (bundles) whose key is not an instance's, stays where it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, BinaryIO

from noctis.storage.base import ObjectStore, StorageUnavailable, StoredObject
from noctis.storage.incoming import IncomingObject

if TYPE_CHECKING:
    from noctis.settings import PoolSettings, Settings

POOL_PREFIX = "_pools"


class UnknownPool(StorageUnavailable):
    """A key or a facility names a storage pool this process was not given."""


def pool_key(pool: str | None, key: str) -> str:
    """``key`` as stored in ``pool`` (None: the default store)."""
    return key if pool is None else f"{POOL_PREFIX}/{pool}/{key}"


def split_key(key: str) -> tuple[str | None, str]:
    """(pool or None for the default store, the key inside that pool)."""
    if not key.startswith(POOL_PREFIX + "/"):
        return None, key
    parts = key.split("/", 2)
    return parts[1], parts[2] if len(parts) > 2 else ""


class PooledStore:
    """The default store plus named pools; each call goes to the pool its key names."""

    def __init__(
        self, default: ObjectStore, pools: Mapping[str, ObjectStore], default_name: str | None
    ) -> None:
        self.default = default
        self.pools = dict(pools)
        self.default_name = default_name

    def __repr__(self) -> str:
        return f"PooledStore(default={self.default!r}, pools={sorted(self.pools)})"

    def pool(self, name: str | None) -> ObjectStore:
        if name is None or name == self.default_name:
            return self.default
        try:
            return self.pools[name]
        except KeyError:
            raise UnknownPool(f"storage pool {name!r} is not configured here") from None

    def _route(self, key: str) -> tuple[ObjectStore, str]:
        pool, inner = split_key(key)
        return self.pool(pool), inner

    def incoming(self) -> IncomingObject:
        # Spooled for the default store; `commit` copies it into another pool when the key
        # names one (an S3 pool copies from its spool anyway).
        return self.default.incoming()

    def commit(self, incoming: IncomingObject, key: str) -> None:
        """Commit ``incoming`` (from `incoming()`) under ``key``, in the pool the key names."""
        store, inner = self._route(key)
        if store is self.default:
            incoming.commit(inner)
            return
        reader = incoming.reader()
        reader.seek(0)
        store.put(inner, reader, incoming.size)

    def put(self, key: str, stream: BinaryIO, length: int) -> None:
        store, inner = self._route(key)
        store.put(inner, stream, length)

    def get(self, key: str) -> bytes:
        store, inner = self._route(key)
        return store.get(inner)

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        store, inner = self._route(key)
        return store.iter_chunks(inner, chunk_size)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        store, inner = self._route(key)
        return store.get_range(inner, offset, length)

    def delete(self, key: str) -> None:
        store, inner = self._route(key)
        store.delete(inner)

    def exists(self, key: str) -> bool:
        store, inner = self._route(key)
        return store.exists(inner)

    def purge(self, key: str) -> None:
        store, inner = self._route(key)
        store.purge(inner)

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        """Every pool's objects whose key *in their pool* starts with ``prefix`` (or those of
        the pool a ``_pools/<pool>/`` prefix names), each under the key the index holds for
        it: the consistency check compares them with the index as they are."""
        pool, inner = split_key(prefix)
        if pool is not None:
            for found in self.pool(pool).list_objects(inner):
                yield dataclasses.replace(found, key=pool_key(pool, found.key))
            return
        yield from self.default.list_objects(prefix)
        for name, store in self.pools.items():
            for found in store.list_objects(prefix):
                yield dataclasses.replace(found, key=pool_key(name, found.key))

    def check(self) -> None:
        self.default.check()
        for name, store in self.pools.items():
            try:
                store.check()
            except StorageUnavailable as exc:
                raise StorageUnavailable(f"storage pool {name}: {exc}") from exc


def commit_incoming(store: ObjectStore, incoming: IncomingObject, key: str) -> None:
    """Commit ``incoming`` under ``key`` in ``store``, pooled or not."""
    if isinstance(store, PooledStore):
        store.commit(incoming, key)
        return
    pool, _ = split_key(key)
    if pool is not None:
        raise UnknownPool(f"storage pool {pool!r} is not configured here")
    incoming.commit(key)


def key_for_pool(store: ObjectStore, pool: str | None, key: str) -> str:
    """The key under which an object of ``pool`` (a facility's `storagePool`, None: the
    default) is stored; UnknownPool if this process was not given that pool."""
    if isinstance(store, PooledStore):
        store.pool(pool)  # raises UnknownPool
        return key if pool == store.default_name else pool_key(pool, key)
    if pool is None:
        return key
    raise UnknownPool(
        f"storage pool {pool!r} is not configured here (NOCTIS_STORAGE_POOLS names none)"
    )


def open_pool(settings: Settings, name: str, pool: PoolSettings) -> ObjectStore:
    if pool.path is not None:
        from noctis.storage.filesystem import FilesystemStore

        return FilesystemStore(pool.path, spool_dir=settings.resolved_spool_dir())
    from noctis.storage.s3 import S3Store

    assert pool.endpoint is not None
    return S3Store.connect(
        pool.endpoint,
        pool.bucket,
        access_key=pool.access_key.get_secret_value(),
        secret_key=pool.secret_key.get_secret_value(),
        secure=pool.secure,
        region=pool.region,
        spool_dir=settings.resolved_spool_dir(),
    )


def with_pools(settings: Settings, default: ObjectStore) -> ObjectStore:
    """``default`` alone, or with the pools the settings name."""
    if not settings.storage_pools:
        return default
    pools = {name: open_pool(settings, name, p) for name, p in settings.storage_pools.items()}
    return PooledStore(default, pools, settings.storage_pool)
