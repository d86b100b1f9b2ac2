"""The data set digest duplicates are compared on: the File Meta left out, whatever the pieces
the file arrives in."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from noctis.dicom.data_set_digest import DataSetDigest
from support.dicomdata import dataset_bytes, small_ct, transfer_syntax_samples


def _digest(data: bytes, piece: int) -> str:
    digest = DataSetDigest()
    for start in range(0, len(data), piece):
        digest.update(data[start : start + piece])
    return digest.hexdigest()


@pytest.mark.parametrize("piece", [1, 7, 131, 133, 4096, 1 << 30])
def test_the_digest_is_the_data_sets_whatever_the_pieces(tmp_path: Path, piece: int) -> None:
    files = [*transfer_syntax_samples(tmp_path).values()]
    small = tmp_path / "small.dcm"
    small_ct().save_as(small, enforce_file_format=True)
    for path in [*files, small]:
        expected = hashlib.sha256(dataset_bytes(path)).hexdigest()
        assert _digest(path.read_bytes(), piece) == expected, path.name


@pytest.mark.parametrize(
    "data",
    [b"", b"not dicom at all", b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff"],
    ids=["empty", "text", "meta-cut-short"],
)
def test_what_is_not_a_part10_file_is_hashed_whole(data: bytes) -> None:
    assert _digest(data, 5) == hashlib.sha256(data).hexdigest()
