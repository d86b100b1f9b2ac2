"""C-STORE: every transfer syntax, retired SOP classes, a full CT series, and every refusal.

Stored bytes are compared with what was sent: the object holds the data set exactly as
received (after a file meta header of its own).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from scp_support import (
    AE_TITLE,
    ECHO_ONLY,
    MODALITY,
    RunningScp,
    assert_same_instance,
    assert_stored_as_sent,
    stored_data_set,
    stored_file,
)

from noctis.scp import status
from noctis.scp.client import store_files
from noctis.scp.store import _write_part10
from noctis.settings import DuplicatePolicy
from noctis.storage.filesystem import FilesystemStore
from support import dcmtk
from support.archive import index_counts, stored_object_keys
from support.dicomdata import (
    RETIRED_US_IMAGE_STORAGE,
    dataset_bytes,
    generate_ct_series,
    retired_us_sample,
    sop_instance_uid,
    transfer_syntax_samples,
)
from support.ports import LOOPBACK

pytestmark = pytest.mark.dcmtk


def test_every_transfer_syntax_with_storescu(scp: RunningScp, tmp_path: Path) -> None:
    samples = transfer_syntax_samples(tmp_path / "samples")
    for syntax, path in samples.items():
        result = dcmtk.storescu(scp.port, [path], calling=MODALITY, called=AE_TITLE, syntax=syntax)
        assert result.ok, result.output
    # storescu re-encodes what it reads (group lengths, padding), so compare instances, not
    # bytes; the same syntax stored means storescu did not have to convert.
    for path in samples.values():
        assert_same_instance(stored_file(scp.runtime, sop_instance_uid(path), tmp_path), path)


def test_every_transfer_syntax_with_own_syntax_client(scp: RunningScp, tmp_path: Path) -> None:
    files = [*transfer_syntax_samples(tmp_path / "samples").values(), retired_us_sample()]
    report = store_files(LOOPBACK, scp.port, files, called_ae=AE_TITLE, calling_ae=MODALITY)
    assert report.failures == []
    assert report.succeeded == len(files)
    assert_stored_as_sent(scp.runtime, files, tmp_path)
    with scp.runtime.sessions() as session:
        from noctis.index.models import Instance

        retired = session.query(Instance).filter_by(sop_class_uid=RETIRED_US_IMAGE_STORAGE).one()
    assert retired.sop_instance_uid == sop_instance_uid(retired_us_sample())


def test_ct_series_300_slices(scp: RunningScp, tmp_path: Path) -> None:
    files = generate_ct_series(tmp_path / "ct", slices=300, size=512)
    result = dcmtk.storescu(scp.port, files, calling=MODALITY, called=AE_TITLE, timeout=300)
    assert result.ok, result.output[-2000:]
    counts = index_counts(scp.runtime)
    assert counts == {"patient": 1, "study": 1, "series": 1, "instance": 300}
    assert_stored_as_sent(scp.runtime, files[::37], tmp_path)
    assert len(stored_object_keys(scp.runtime.store)) == 300


def test_same_instance_twice_is_success_another_data_set_keeps_the_first(
    scp: RunningScp, tmp_path: Path
) -> None:
    """The default duplicate policy (keep-first): a re-send with another data set is answered
    Success and discarded; with ``reject`` it gets C100 and its comment."""
    [original] = generate_ct_series(tmp_path / "a", slices=1, size=16)
    assert store_files(LOOPBACK, scp.port, [original], AE_TITLE, MODALITY).succeeded == 1
    again = store_files(LOOPBACK, scp.port, [original], AE_TITLE, MODALITY)
    assert again.statuses == {original: status.SUCCESS}

    changed = tmp_path / "changed.dcm"
    ds = dcmread(original)
    ds.PatientName = "Someone^Else"
    ds.save_as(changed, enforce_file_format=True)
    report = store_files(LOOPBACK, scp.port, [changed], AE_TITLE, MODALITY)
    assert report.statuses == {changed: status.SUCCESS}
    assert index_counts(scp.runtime)["instance"] == 1
    assert len(stored_object_keys(scp.runtime.store)) == 1
    assert stored_data_set(scp.runtime, sop_instance_uid(original), tmp_path) == dataset_bytes(
        original
    )

    scp.runtime.settings.duplicate_policy = DuplicatePolicy.REJECT
    report = store_files(LOOPBACK, scp.port, [changed], AE_TITLE, MODALITY)
    assert report.statuses == {changed: status.DUPLICATE_CONFLICT}
    assert "already stored" in report.failures[0][1]
    assert index_counts(scp.runtime)["instance"] == 1
    assert len(stored_object_keys(scp.runtime.store)) == 1


def _write(ds_path: Path, source: Path | None = None, **changes: object) -> Path:
    ds = dcmread(source or ds_path)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(ds_path, enforce_file_format=True)
    return ds_path


def test_malformed_data_set_is_refused_and_nothing_stored(scp: RunningScp, tmp_path: Path) -> None:
    [good] = generate_ct_series(tmp_path / "g", slices=1, size=16)
    garbage = tmp_path / "garbage.dcm"
    raw = good.read_bytes()
    offset = len(raw) - len(dataset_bytes(good))
    # Valid file meta, then a data set that is not one: an element claiming 2 GB.
    garbage.write_bytes(raw[:offset] + b"\x08\x00\x05\x00CS\xff\xff" + b"\xff" * 64)
    no_study = _write(tmp_path / "g" / good.name, StudyInstanceUID=None)

    report = store_files(LOOPBACK, scp.port, [garbage, no_study], AE_TITLE, MODALITY)
    assert report.statuses[garbage] == status.CANNOT_UNDERSTAND
    assert report.statuses[no_study] == status.CANNOT_UNDERSTAND
    assert "StudyInstanceUID" in dict(report.failures)[no_study]
    assert index_counts(scp.runtime) == {"patient": 0, "study": 0, "series": 0, "instance": 0}
    assert stored_object_keys(scp.runtime.store) == set()


def test_data_set_not_matching_the_request_is_refused(scp: RunningScp, tmp_path: Path) -> None:
    [original] = generate_ct_series(tmp_path / "m", slices=1, size=16)
    other = _write(tmp_path / "other.dcm", source=original, SOPInstanceUID=generate_uid())
    # The request takes its UIDs from the file meta: original's meta, the other data set.
    path = tmp_path / "mismatch.dcm"
    meta = original.read_bytes()[: len(original.read_bytes()) - len(dataset_bytes(original))]
    path.write_bytes(meta + dataset_bytes(other))
    report = store_files(LOOPBACK, scp.port, [path], AE_TITLE, MODALITY)
    assert report.statuses == {path: status.DOES_NOT_MATCH_SOP_CLASS}
    assert index_counts(scp.runtime)["instance"] == 0


def test_store_refused_for_an_ae_without_the_store_service(scp: RunningScp, tmp_path: Path) -> None:
    [path] = generate_ct_series(tmp_path / "e", slices=1, size=16)
    report = store_files(LOOPBACK, scp.port, [path], AE_TITLE, ECHO_ONLY)
    assert report.statuses == {path: status.NOT_AUTHORIZED}
    assert index_counts(scp.runtime)["instance"] == 0


def test_storescu_sees_the_refusal(scp: RunningScp, tmp_path: Path) -> None:
    [path] = generate_ct_series(tmp_path / "r", slices=1, size=16)
    result = dcmtk.storescu(scp.port, [path], calling=ECHO_ONLY, called=AE_TITLE)
    # 0124 "Refused: Not Authorized" is a PS3.7 general status dcmtk has no name for.
    assert "Status: 0x124" in result.output, result.output
    assert index_counts(scp.runtime)["instance"] == 0


class _SpoolEvent:
    """What the C-STORE handler reads from pynetdicom's event, for the no-meta fallback."""

    def __init__(self, path: Path | None, data: bytes, sop_class: str, sop_uid: str) -> None:
        self._path, self._data = path, data
        self.request = SimpleNamespace(
            AffectedSOPClassUID=sop_class, AffectedSOPInstanceUID=sop_uid
        )
        self.context = SimpleNamespace(transfer_syntax=ExplicitVRLittleEndian)

    @property
    def dataset_path(self) -> Path:
        if self._path is None:
            raise AttributeError("not chunked")
        return self._path

    def encoded_dataset(self, include_meta: bool = True) -> bytes:
        assert not include_meta
        return self._data


@pytest.mark.parametrize("chunked", [True, False])
def test_received_data_set_without_file_meta_gets_one(tmp_path: Path, chunked: bool) -> None:
    [path] = generate_ct_series(tmp_path / "n", slices=1, size=16)
    data = dataset_bytes(path)
    raw = tmp_path / "raw.dcm"
    raw.write_bytes(data)
    event = _SpoolEvent(raw if chunked else None, data, CTImageStorage, sop_instance_uid(path))
    store = FilesystemStore(tmp_path / "objects", spool_dir=tmp_path / "spool")
    with store.incoming() as received:
        _write_part10(event, received)  # type: ignore[arg-type]
        received.commit("instance.dcm")
    written = store.root / "instance.dcm"
    assert raw.read_bytes() == data  # pynetdicom's file, which it removes itself
    assert dataset_bytes(written) == data
    meta = dcmread(written, stop_before_pixels=True).file_meta
    assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert meta.MediaStorageSOPInstanceUID == sop_instance_uid(path)
    assert meta.MediaStorageSOPClassUID == CTImageStorage
