"""C-STORE of damaged and hostile instances: each refused with a permanent failure status and
an ErrorComment saying what is wrong, nothing stored; a data set on another SOP class's
presentation context refused (A900) on both receive paths; a deflate bomb refused with the
server's memory bounded.

The SCP runs in this process, so this process's RSS is the server's.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from scp_support import AE_TITLE, MODALITY, RunningScp

from noctis.scp import status
from noctis.scp.client import store_files
from support import dcmtk, wait
from support.archive import index_counts, stored_object_keys
from support.damaged import damaged_instances, part10, write_deflated_bomb
from support.dicomdata import dataset_bytes, small_ct
from support.memory import PeakRss
from support.ports import LOOPBACK

EMPTY = {"patient": 0, "study": 0, "series": 0, "instance": 0}
DAMAGED = damaged_instances()


def _nothing_stored(scp: RunningScp) -> None:
    assert index_counts(scp.runtime) == EMPTY
    assert stored_object_keys(scp.runtime.store) == set()


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", DAMAGED, ids=lambda case: case.name)
def test_damaged_instances_are_refused_as_not_understood(
    scp: RunningScp, tmp_path: Path, case: Any
) -> None:
    path = tmp_path / f"{case.name}.dcm"
    path.write_bytes(case.data)
    report = store_files(LOOPBACK, scp.port, [path], AE_TITLE, MODALITY)
    assert report.statuses == {path: status.CANNOT_UNDERSTAND}
    assert case.comment in report.failures[0][1]
    _nothing_stored(scp)


@pytest.mark.dcmtk
@pytest.mark.parametrize(
    ("study_uid", "comment"),
    [
        ("1.2.3/4", "invalid StudyInstanceUID: not only digits and dots"),
        ("1." + "2" * 98, "invalid StudyInstanceUID: 100 characters, more than 64"),
    ],
)
def test_invalid_uids_from_storescu_get_a_permanent_failure(
    scp: RunningScp, tmp_path: Path, study_uid: str, comment: str
) -> None:
    """The UID with "/" got A700 ("try again later") before: modalities retried for ever."""
    path = tmp_path / "bad-uid.dcm"
    small_ct(StudyInstanceUID=study_uid).save_as(path, enforce_file_format=True)
    # -d: storescu prints the response's status and Error Comment
    args = ["-d", "-aet", MODALITY, "-aec", AE_TITLE, LOOPBACK, str(scp.port), str(path)]
    result = dcmtk.run_tool("storescu", args)
    assert dcmtk.final_status(result.output) == status.CANNOT_UNDERSTAND, result.output
    assert comment in result.output
    _nothing_stored(scp)


def _sending_pdus_of(monkeypatch: pytest.MonkeyPatch, length: int) -> None:
    """pynetdicom (our SCU here) cuts what it sends into PDUs of ``length``: 64 splits the
    command, which leaves the message to pynetdicom's receive path (as in test_direct_store)."""
    monkeypatch.setattr(DIMSEServiceProvider, "maximum_pdu_size", property(lambda _: length))


def _store_on_context(port: int, data_set: bytes, sop_class: str, sop_uid: str) -> Any:
    """Send a C-STORE-RQ for ``sop_class`` on the MR Image Storage context (pynetdicom's
    send_c_store would pick the matching context); the response."""
    ae = AE(ae_title=MODALITY)
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate(LOOPBACK, port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        (mr_context,) = [c for c in assoc.accepted_contexts if c.abstract_syntax == MRImageStorage]
        request = C_STORE()
        request.MessageID = 1
        request.AffectedSOPClassUID = sop_class
        request.AffectedSOPInstanceUID = sop_uid
        request.Priority = 0x0002
        request.DataSet = io.BytesIO(data_set)
        assoc._reactor_checkpoint.clear()  # as pynetdicom's own send_c_* do
        wait.until(lambda: assoc._is_paused, timeout=5, what="the reactor to pause", interval=0.001)
        assoc.dimse.send_msg(request, mr_context.context_id)
        _, response = assoc.dimse.get_msg(block=True)
        assoc._reactor_checkpoint.set()
        return response
    finally:
        assoc.release()


@pytest.mark.parametrize("runtime", ["embedded"], indirect=True)
@pytest.mark.parametrize(
    "pdu_length",
    [
        pytest.param(16382, id="direct-path"),
        pytest.param(64, id="pynetdicom-path"),  # a split command is left to pynetdicom
    ],
)
def test_a_data_set_on_another_sop_classs_context_is_refused(
    scp: RunningScp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pdu_length: int
) -> None:
    ct = small_ct()
    path = tmp_path / "ct.dcm"
    ct.save_as(path, enforce_file_format=True)
    _sending_pdus_of(monkeypatch, pdu_length)
    response = _store_on_context(scp.port, dataset_bytes(path), ct.SOPClassUID, ct.SOPInstanceUID)
    assert int(response.Status) == status.DOES_NOT_MATCH_SOP_CLASS
    assert "presentation context" in str(response.ErrorComment)
    _nothing_stored(scp)


@pytest.fixture
def bomb(tmp_path: Path) -> Iterator[Path]:
    """306 KB on the wire, 300 MiB inflated (the issue's figures)."""
    yield write_deflated_bomb(tmp_path / "bomb.dcm", 300 << 20)


@pytest.mark.parametrize("runtime", ["embedded"], indirect=True)
def test_a_deflate_bomb_is_refused_and_memory_stays_bounded(
    scp: RunningScp, bomb: Path, tmp_path: Path
) -> None:
    scp.runtime.settings.max_inflated_mb = 100
    with PeakRss() as rss:
        report = store_files(LOOPBACK, scp.port, [bomb], AE_TITLE, MODALITY)
    assert report.statuses == {bomb: status.CANNOT_UNDERSTAND}
    assert "inflated data set exceeds the 100 MiB limit" in report.failures[0][1]
    assert rss.growth < 50 << 20, f"RSS grew by {rss.growth >> 20} MiB"
    _nothing_stored(scp)
    # The same instance inflating to less than the cap is stored, still streamed.
    small = write_deflated_bomb(tmp_path / "small.dcm", 20 << 20)
    assert store_files(LOOPBACK, scp.port, [small], AE_TITLE, MODALITY).succeeded == 1
    assert index_counts(scp.runtime)["instance"] == 1


def test_a_good_instance_after_refusals_on_one_association_is_stored(
    scp: RunningScp, tmp_path: Path
) -> None:
    files = []
    for case in DAMAGED[:3]:
        files.append(tmp_path / f"{case.name}.dcm")
        files[-1].write_bytes(case.data)
    files.append(tmp_path / "good.dcm")
    files[-1].write_bytes(part10(small_ct()))
    report = store_files(LOOPBACK, scp.port, files, AE_TITLE, MODALITY)
    assert [report.statuses[f] for f in files] == [status.CANNOT_UNDERSTAND] * 3 + [0]
    assert index_counts(scp.runtime)["instance"] == 1
