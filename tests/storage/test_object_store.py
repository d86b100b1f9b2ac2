"""One contract for every object store: the filesystem backend and S3 (a real SeaweedFS).

Ingest, WADO and the worker only see the ObjectStore interface, so both backends must behave
the same way down to the edge cases (empty objects, ranges past the end, short streams).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from noctis.settings import Settings
from noctis.storage import ObjectNotFound, ObjectStore, StorageUnavailable, open_store
from noctis.storage.filesystem import FilesystemStore
from noctis.storage.s3 import PART_SIZE, S3Store
from support.s3 import SeaweedFS

KEY = "facility-a/1.2.840.1/1.2.840.1.1/1.2.840.1.1.1.dcm"
# Every byte value, CR/LF and NUL included: nothing may be decoded or translated on the way.
BINARY = bytes(range(256)) * 64 + b"\r\n\x00\xff"
INVALID_KEYS = ["../x", "/absolute/key", "", "a/../b", "a//b", "a/./b", "a/", "a b"]
# How long a caller may wait for "S3 is down" before the store says so.
DOWN_DEADLINE_SECONDS = 5.0


@pytest.fixture(params=["filesystem", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    backend: ObjectStore = request.getfixturevalue(
        "fs_store" if request.param == "filesystem" else "s3_store"
    )
    return backend


def put_bytes(store: ObjectStore, key: str, data: bytes) -> None:
    store.put(key, io.BytesIO(data), len(data))


def sha256_of_chunks(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def test_store_implements_the_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)


def test_check_passes_on_a_healthy_store(store: ObjectStore) -> None:
    store.check()


def test_binary_bytes_round_trip_unchanged(store: ObjectStore) -> None:
    put_bytes(store, KEY, BINARY)
    assert store.get(KEY) == BINARY


def test_empty_object(store: ObjectStore) -> None:
    put_bytes(store, KEY, b"")
    assert store.exists(KEY)
    assert store.get(KEY) == b""
    assert store.get_range(KEY, 0, 10) == b""
    assert b"".join(store.iter_chunks(KEY)) == b""


def test_20_mb_object_streamed_from_a_file(store: ObjectStore, tmp_path: Path) -> None:
    # Bigger than the S3 part size, so S3 takes the multipart path.
    size = 20 * 1000 * 1000
    assert size > PART_SIZE
    source = tmp_path / "big.bin"
    with source.open("wb") as out:
        for _ in range(size // 1_000_000):
            out.write(os.urandom(1_000_000))
    expected = hashlib.sha256(source.read_bytes()).hexdigest()

    with source.open("rb") as stream:
        store.put(KEY, stream, size)

    assert sha256_of_chunks(store.iter_chunks(KEY)) == expected
    assert hashlib.sha256(store.get(KEY)).hexdigest() == expected
    assert store.get_range(KEY, size - 10, 100) == source.read_bytes()[-10:]


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [
        (0, 10, BINARY[:10]),
        (1000, 500, BINARY[1000:1500]),  # the middle
        (len(BINARY) - 4, 100, BINARY[-4:]),  # runs past the end: what there is
        (len(BINARY), 10, b""),  # starts at the end
        (len(BINARY) + 1000, 10, b""),  # starts past the end
        (5, 0, b""),
    ],
    ids=["at-0", "middle", "past-end", "at-end", "beyond-end", "zero-length"],
)
def test_get_range(store: ObjectStore, offset: int, length: int, expected: bytes) -> None:
    put_bytes(store, KEY, BINARY)
    assert store.get_range(KEY, offset, length) == expected


def test_get_range_rejects_negative_offset_or_length(store: ObjectStore) -> None:
    put_bytes(store, KEY, BINARY)
    with pytest.raises(ValueError):
        store.get_range(KEY, -1, 10)
    with pytest.raises(ValueError):
        store.get_range(KEY, 0, -1)


def test_iter_chunks_reassembles_the_object(store: ObjectStore) -> None:
    put_bytes(store, KEY, BINARY)
    chunks = list(store.iter_chunks(KEY, chunk_size=1000))
    assert b"".join(chunks) == BINARY
    assert len(chunks) > 1
    assert all(len(chunk) <= 1000 for chunk in chunks)


def test_exists_follows_put_and_delete(store: ObjectStore) -> None:
    assert not store.exists(KEY)
    put_bytes(store, KEY, BINARY)
    assert store.exists(KEY)
    assert not store.exists(KEY + ".other")
    store.delete(KEY)
    assert not store.exists(KEY)


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.delete(KEY)  # never existed
    put_bytes(store, KEY, BINARY)
    store.delete(KEY)
    store.delete(KEY)
    assert not store.exists(KEY)


def test_missing_key_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.get(KEY)
    with pytest.raises(ObjectNotFound):
        store.get_range(KEY, 0, 10)
    with pytest.raises(ObjectNotFound):
        store.get_range(KEY, 0, 0)
    with pytest.raises(ObjectNotFound):
        list(store.iter_chunks(KEY))


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys_are_rejected(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError):
        put_bytes(store, key, b"data")
    with pytest.raises(ValueError):
        store.get(key)
    with pytest.raises(ValueError):
        store.get_range(key, 0, 1)
    with pytest.raises(ValueError):
        list(store.iter_chunks(key))
    with pytest.raises(ValueError):
        store.exists(key)
    with pytest.raises(ValueError):
        store.delete(key)


def test_put_over_a_key_replaces_the_object(store: ObjectStore) -> None:
    put_bytes(store, KEY, BINARY)
    put_bytes(store, KEY, b"replacement")
    assert store.get(KEY) == b"replacement"


@pytest.mark.parametrize(
    ("available", "length"),
    [(3, 10), (PART_SIZE + 1024, PART_SIZE + 4096)],
    ids=["small", "multipart"],
)
def test_short_stream_raises_and_stores_nothing(
    store: ObjectStore, available: int, length: int
) -> None:
    with pytest.raises(ValueError, match="stream ended"):
        store.put(KEY, io.BytesIO(b"x" * available), length)
    assert not store.exists(KEY)


def test_failed_put_leaves_the_previous_object(store: ObjectStore) -> None:
    put_bytes(store, KEY, BINARY)
    with pytest.raises(ValueError):
        store.put(KEY, io.BytesIO(b"short"), 100)
    assert store.get(KEY) == BINARY


# S3 only ------------------------------------------------------------------------------------


def test_s3_down_fails_fast_and_recovers(s3_server: SeaweedFS, s3_store: S3Store) -> None:
    put_bytes(s3_store, KEY, BINARY)
    with s3_server.offline():
        for call in (s3_store.check, lambda: s3_store.get(KEY), lambda: s3_store.exists(KEY)):
            with ThreadPoolExecutor(1) as pool, pytest.raises(StorageUnavailable):
                # A deadline, not a timing: past it, result() raises TimeoutError instead.
                pool.submit(call).result(timeout=DOWN_DEADLINE_SECONDS)
        with pytest.raises(StorageUnavailable):
            put_bytes(s3_store, KEY + ".new", b"data")
    s3_store.check()
    assert s3_store.get(KEY) == BINARY


def test_s3_check_reports_a_missing_bucket(s3_server: SeaweedFS) -> None:
    store = S3Store.connect(
        s3_server.endpoint,
        "no-such-bucket",
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
    )
    with pytest.raises(StorageUnavailable, match="no-such-bucket"):
        store.check()


def test_s3_wrong_credentials_are_reported_without_the_secret(
    s3_server: SeaweedFS, s3_store: S3Store
) -> None:
    wrong_secret = "wrong-secret-" + "z" * 20
    store = S3Store.connect(
        s3_server.endpoint,
        s3_store.bucket,
        access_key=s3_server.access_key,
        secret_key=wrong_secret,
        secure=False,
    )
    with pytest.raises(StorageUnavailable) as raised:
        store.check()
    assert wrong_secret not in str(raised.value)
    assert wrong_secret not in repr(store)


def test_s3_store_from_settings(s3_server: SeaweedFS, s3_store: S3Store) -> None:
    settings = Settings(
        storage_backend="s3",
        s3_endpoint=s3_server.url,  # a URL works too; its scheme decides TLS
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        s3_bucket=s3_store.bucket,
    )
    store = open_store(settings)
    assert isinstance(store, S3Store)
    store.check()
    put_bytes(store, KEY, BINARY)
    assert s3_store.get(KEY) == BINARY


def test_listing_by_prefix_and_purging(store: ObjectStore) -> None:
    """What the deletion sweep and the consistency check rely on: a listing by key prefix
    (sizes and times included, no half-written object) and a purge that leaves nothing."""
    keys = ["north/1.2/3.4/a.dcm", "north/1.2/3.4/b.dcm", "north/1.20/x.dcm", "south/1.2/c.dcm"]
    for key in keys:
        put_bytes(store, key, key.encode())
    listed = {o.key: o for o in store.list_objects("north/1.2/")}
    assert set(listed) == {"north/1.2/3.4/a.dcm", "north/1.2/3.4/b.dcm"}
    assert listed["north/1.2/3.4/a.dcm"].size == len(b"north/1.2/3.4/a.dcm")
    assert listed["north/1.2/3.4/a.dcm"].modified.tzinfo is not None
    assert {o.key for o in store.list_objects("")} == set(keys)
    assert list(store.list_objects("nowhere/")) == []
    store.purge("north/1.2/3.4/a.dcm")
    store.purge("north/1.2/3.4/a.dcm")  # already gone: no error
    assert not store.exists("north/1.2/3.4/a.dcm")
    assert store.retained_until("north/1.2/3.4/b.dcm") is None  # no object lock here


class _SweptStore(FilesystemStore):
    """A filesystem store whose new directories are removed right after being made, the
    first ``sweeps`` times: a deletion's sweep purging the study at the worst instant."""

    def __init__(self, root: Path, sweeps: int) -> None:
        super().__init__(root, spool_dir=root.parent)
        self.sweeps = sweeps

    def _make_directories(self, directory: Path) -> None:
        super()._make_directories(directory)
        if self.sweeps > 0:
            self.sweeps -= 1
            directory.rmdir()


@pytest.mark.parametrize("way", ["put", "incoming"])
def test_a_store_lands_when_a_sweep_removes_its_directory_meanwhile(
    tmp_path: Path, way: str
) -> None:
    """A study deleted and sent again at once: the sweep removes the directories it empties
    while the new store makes names in them; the store still lands (no ENOENT failure)."""
    store = _SweptStore(tmp_path / "objects", sweeps=2)
    if way == "put":
        put_bytes(store, KEY, BINARY)
    else:
        incoming = store.incoming()
        incoming.write(BINARY)
        incoming.commit(KEY)
        incoming.close()
    assert store.sweeps == 0, "the sweep never ran between the directory and the name"
    assert store.get(KEY) == BINARY
