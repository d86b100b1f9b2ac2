"""Storage pools from the settings (embedded: directories): routing by key, refusal of a pool
that is not configured, and the readiness check naming the pool that fails."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from noctis.storage import StorageUnavailable, open_store
from noctis.storage.filesystem import FilesystemStore
from noctis.storage.pools import PooledStore, UnknownPool, commit_incoming, key_for_pool
from support.archive import embedded_settings


def test_settings_name_directory_pools_and_keys_route_to_them(tmp_path: Path) -> None:
    settings = embedded_settings(
        tmp_path,
        storage_pool="main",
        storage_pools={"cold": {"path": str(tmp_path / "cold")}},
    )
    store = open_store(settings)
    assert isinstance(store, PooledStore)
    cold = store.pool("cold")
    assert isinstance(cold, FilesystemStore) and cold.root == tmp_path / "cold"
    assert store.pool("main") is store.default and store.pool(None) is store.default

    key = key_for_pool(store, "cold", "f/1/2/3.dcm")
    assert key == "_pools/cold/f/1/2/3.dcm"
    assert key_for_pool(store, "main", "f/1/2/3.dcm") == "f/1/2/3.dcm"
    with store.incoming() as incoming:
        incoming.write(b"DICM-bytes")
        commit_incoming(store, incoming, key)
    assert (tmp_path / "cold" / "f/1/2/3.dcm").read_bytes() == b"DICM-bytes"
    assert store.get(key) == b"DICM-bytes" and store.get_range(key, 5, 3) == b"byt"
    assert not store.default.exists("f/1/2/3.dcm")
    store.put("plain/key.dcm", io.BytesIO(b"x"), 1)
    assert store.default.exists("plain/key.dcm")
    # A listing sees every pool, each object under the key the index holds for it.
    assert {o.key for o in store.list_objects("f/")} == {key}
    assert {o.key for o in store.list_objects("plain/")} == {"plain/key.dcm"}
    assert {o.key for o in store.list_objects("_pools/cold/")} == {key}
    store.purge(key)
    assert not store.exists(key) and not (tmp_path / "cold" / "f").exists()

    with pytest.raises(UnknownPool, match="storage pool 'warm' is not configured"):
        key_for_pool(store, "warm", "f/1/2/3.dcm")
    with pytest.raises(UnknownPool):
        store.get("_pools/warm/f/1/2/3.dcm")

    store.check()
    shutil.rmtree(tmp_path / "cold")
    with pytest.raises(StorageUnavailable, match="storage pool cold"):
        store.check()


def test_without_pools_the_store_is_the_plain_one(tmp_path: Path) -> None:
    store = open_store(embedded_settings(tmp_path))
    assert isinstance(store, FilesystemStore)
    assert key_for_pool(store, None, "f/1.dcm") == "f/1.dcm"
    with pytest.raises(UnknownPool):
        key_for_pool(store, "cold", "f/1.dcm")


def test_a_pool_needs_a_path_or_an_endpoint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="a path or an S3 endpoint"):
        embedded_settings(tmp_path, storage_pools={"cold": {"bucket": "b"}})
    with pytest.raises(ValueError, match="needs a bucket"):
        embedded_settings(tmp_path, storage_pools={"cold": {"endpoint": "s3:9000"}})
