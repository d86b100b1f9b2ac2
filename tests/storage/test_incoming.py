"""The writer for incoming instances, on both backends: what ingest relies on.

An instance written in pieces comes back whole, with its size and the digest of its data set
(File Meta excluded); committed, it is the object under its key; closed, nothing of it is left
in the spool, whether it was committed or not.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from noctis.dicom.part10 import part10_head
from noctis.storage import ObjectStore
from noctis.storage.filesystem import FilesystemStore
from noctis.storage.incoming import IN_MEMORY_LIMIT

KEY = "facility-a/1.2.840.1/1.2.840.1.1/1.2.840.1.1.1.dcm"
HEAD = part10_head("1.2.840.10008.5.1.4.1.1.7", "1.2.840.1.1.1", "1.2.840.10008.1.2.1")


@pytest.fixture(params=["filesystem", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    backend: ObjectStore = request.getfixturevalue(
        "fs_store" if request.param == "filesystem" else "s3_store"
    )
    return backend


def _spooled(store: ObjectStore) -> list[Path]:
    spool_dir = store.spool_dir  # type: ignore[attr-defined]
    return sorted(spool_dir.iterdir()) if spool_dir.is_dir() else []


@pytest.mark.parametrize(
    "data_set_size", [0, 100_000, IN_MEMORY_LIMIT + 12_345], ids=["empty", "small", "big"]
)
def test_an_instance_written_in_pieces_is_committed_whole(
    store: ObjectStore, data_set_size: int
) -> None:
    data_set = os.urandom(data_set_size)
    with store.incoming() as incoming:
        incoming.write(HEAD)
        for start in range(0, data_set_size, 16_384):  # PDV-sized pieces, memoryviews
            incoming.write(memoryview(data_set)[start : start + 16_384])
        assert incoming.size == len(HEAD) + data_set_size
        # The digest duplicates are told apart by: the data set's, not the sender's File Meta.
        assert incoming.sha256 == hashlib.sha256(data_set).hexdigest()
        reader = incoming.reader()
        reader.seek(0)
        assert reader.read() == HEAD + data_set
        incoming.commit(KEY)
    assert store.get(KEY) == HEAD + data_set
    assert _spooled(store) == []


def test_an_instance_closed_without_a_commit_leaves_nothing(store: ObjectStore) -> None:
    with store.incoming() as incoming:
        incoming.write(HEAD + b"\x08\x00" * 1000)
        incoming.finish()
    assert not store.exists(KEY)
    assert _spooled(store) == []


def test_a_failed_receipt_leaves_nothing(store: ObjectStore) -> None:
    with pytest.raises(ConnectionResetError), store.incoming() as incoming:
        incoming.write(HEAD)
        raise ConnectionResetError("the peer went away mid data set")
    assert _spooled(store) == []


def test_a_filesystem_commit_under_a_taken_key_fails_and_keeps_the_first_object(
    fs_store: FilesystemStore,
) -> None:
    """Keys are never reused (ingest makes a fresh one per attempt); if one were, the first
    object stays as it was."""
    with fs_store.incoming() as first:
        first.write(HEAD + b"first")
        first.commit(KEY)
    with fs_store.incoming() as second:
        second.write(HEAD + b"second")
        with pytest.raises(FileExistsError):
            second.commit(KEY)
    assert fs_store.get(KEY) == HEAD + b"first"
    assert _spooled(fs_store) == []


def test_the_filesystem_commits_by_linking_the_spooled_file(fs_store: FilesystemStore) -> None:
    """No copy: the object is the file the data was received into."""
    with fs_store.incoming() as incoming:
        incoming.write(HEAD + b"\x00" * 4096)
        [spooled] = _spooled(fs_store)
        incoming.commit(KEY)
        assert os.path.samefile(spooled, fs_store.root / KEY)
    assert not spooled.exists()
    assert fs_store.get(KEY) == HEAD + b"\x00" * 4096
