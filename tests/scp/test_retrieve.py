"""C-MOVE and C-GET: instances come back byte for byte as they were sent, with the right
sub-operation counts; failures get the PS3.4 statuses; a facility retrieves only its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)
from scp_support import (
    AE_TITLE,
    ECHO_ONLY,
    MODALITY,
    RunningScp,
    final_counts,
    get,
    identifier,
    make_instance,
    move,
)

from noctis.core.ingest import FacilityRef
from noctis.core.runtime import Runtime
from noctis.scp import status
from noctis.scp.client import store_files
from support import dcmtk
from support.archive import register_facility
from support.dicomdata import (
    dataset_bytes,
    generate_ct_series,
    sop_instance_uid,
    transfer_syntax_samples,
)
from support.incoming import ingest_file
from support.ports import LOOPBACK, free_port

pytestmark = pytest.mark.dcmtk

DEST = "DEST"
OTHER = "OTHERPACS"


def register_destination(runtime: Runtime, port: int, *, host: str = LOOPBACK) -> None:
    """st-mary as in conftest, plus the C-MOVE destination DEST at host:port."""
    register_facility(
        runtime,
        "st-mary",
        [
            {"aeTitle": MODALITY},
            {"aeTitle": ECHO_ONLY, "services": ["echo"]},
            {"aeTitle": DEST, "host": host, "port": port, "services": ["store"]},
        ],
    )


def study_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)


@pytest.fixture
def samples(scp: RunningScp, tmp_path: Path) -> list[Path]:
    """The real files of every transfer syntax, stored through the SCP."""
    files = list(transfer_syntax_samples(tmp_path / "samples").values())
    report = store_files(LOOPBACK, scp.port, files, AE_TITLE, MODALITY)
    assert report.failures == []
    return files


def by_sop_uid(files: list[Path], *, as_sent: bool = False) -> dict[str, bytes]:
    """SOP Instance UID -> data set bytes; ``as_sent``: with the pad byte PS3.5 requires on
    the wire after an odd-length deflated data set (pydicom's deflate sample lacks it)."""
    found = {}
    for path in files:
        data = dataset_bytes(path)
        found[sop_instance_uid(path)] = data + b"\x00" if as_sent and len(data) % 2 else data
    return found


def test_movescu_to_storescp_every_syntax_byte_identical(
    scp: RunningScp, samples: list[Path], tmp_path: Path
) -> None:
    with dcmtk.StoreSCP(tmp_path / "dest", ae_title=DEST) as destination:
        register_destination(scp.runtime, destination.port)
        studies = "\\".join(sorted({study_uid(f) for f in samples}))
        result = dcmtk.movescu(
            scp.port,
            {"StudyInstanceUID": studies},
            destination=DEST,
            level="STUDY",
            calling=MODALITY,
            called=AE_TITLE,
        )
        assert result.ok, result.output[-3000:]
        assert dcmtk.final_status(result.output) == status.SUCCESS
        assert dcmtk.suboperation_counts(result.output) == {
            "remaining": 0,
            "completed": len(samples),
            "failed": 0,
            "warning": 0,
        }
        received = by_sop_uid(destination.files())
    assert received == by_sop_uid(samples, as_sent=True)


def test_getscu_ct_series_byte_identical(scp: RunningScp, tmp_path: Path) -> None:
    series = generate_ct_series(tmp_path / "ct", slices=12, size=64)
    assert store_files(LOOPBACK, scp.port, series, AE_TITLE, MODALITY).succeeded == 12
    result = dcmtk.getscu(
        scp.port,
        {"StudyInstanceUID": study_uid(series[0])},
        level="STUDY",
        calling=MODALITY,
        called=AE_TITLE,
        output_dir=tmp_path / "got",
    )
    assert result.ok, result.output[-3000:]
    assert dcmtk.suboperation_counts(result.output)["completed"] == 12
    got = sorted((tmp_path / "got").iterdir())
    assert by_sop_uid(got) == by_sop_uid(series)


def test_get_every_syntax_in_its_own_syntax(
    scp: RunningScp, samples: list[Path], tmp_path: Path
) -> None:
    storage: dict[str, list[str]] = {}
    for path in samples:
        meta = dcmread(path, stop_before_pixels=True).file_meta
        storage.setdefault(str(meta.MediaStorageSOPClassUID), []).append(
            str(meta.TransferSyntaxUID)
        )
    asked = identifier("STUDY", StudyInstanceUID="\\".join({study_uid(f) for f in samples}))
    statuses, received = get(scp.port, asked, storage)
    code, counts = final_counts(statuses)
    assert code == status.SUCCESS
    assert counts == {"completed": len(samples), "failed": 0, "warning": 0}
    assert {uid: r.data_set for uid, r in received.items()} == by_sop_uid(samples, as_sent=True)
    assert statuses[0].Status == status.PENDING  # a pending response per sub-operation
    assert [int(s.NumberOfRemainingSuboperations) for s in statuses[:-1]] == list(
        range(len(samples) - 1, -1, -1)
    )


def test_get_converts_only_when_the_peer_refuses_the_stored_syntax(
    scp: RunningScp, samples: list[Path], tmp_path: Path
) -> None:
    syntax_of = {
        str(dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID): f for f in samples
    }
    jpeg, big_endian = syntax_of[JPEGBaseline8Bit], syntax_of[ExplicitVRBigEndian]
    sop_class = str(dcmread(jpeg, stop_before_pixels=True).SOPClassUID)
    assert sop_class == str(dcmread(big_endian, stop_before_pixels=True).SOPClassUID)
    asked = identifier(
        "IMAGE",
        StudyInstanceUID="\\".join({study_uid(jpeg), study_uid(big_endian)}),
        SOPInstanceUID=f"{sop_instance_uid(jpeg)}\\{sop_instance_uid(big_endian)}",
    )
    statuses, received = get(
        scp.port, asked, {sop_class: [ExplicitVRLittleEndian, ImplicitVRLittleEndian]}
    )
    code, counts = final_counts(statuses)
    # JPEG is decoded and sent uncompressed; big endian cannot be converted without
    # corrupting 16-bit pixel data, so that sub-operation fails.
    assert code == status.SUBOPERATIONS_WARNING
    assert counts == {"completed": 1, "failed": 1, "warning": 0}
    failed = statuses[-1].FailedSOPInstanceUIDList
    assert [failed] if isinstance(failed, str) else list(failed) == [sop_instance_uid(big_endian)]
    assert set(received) == {sop_instance_uid(jpeg)}
    assert received[sop_instance_uid(jpeg)].transfer_syntax in (
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
    )


def test_move_failures(scp: RunningScp, samples: list[Path], tmp_path: Path) -> None:
    runtime = scp.runtime
    uid = study_uid(samples[0])
    unknown = move(scp.port, identifier("STUDY", StudyInstanceUID=uid), "NOBODY")
    assert [int(s.Status) for s in unknown] == [status.MOVE_DESTINATION_UNKNOWN]

    register_destination(runtime, free_port())  # registered, nothing listening
    down = move(scp.port, identifier("STUDY", StudyInstanceUID=uid), DEST)
    code, counts = final_counts(down)
    assert code == status.UNABLE_TO_PERFORM_SUBOPERATIONS
    assert counts["failed"] >= 1 and counts["completed"] == 0

    no_key = move(scp.port, identifier("STUDY", StudyInstanceUID=""), DEST)
    assert [int(s.Status) for s in no_key] == [status.DOES_NOT_MATCH_SOP_CLASS]
    wildcard = move(scp.port, identifier("STUDY", StudyInstanceUID="1.2.*"), DEST)
    assert [int(s.Status) for s in wildcard] == [status.DOES_NOT_MATCH_SOP_CLASS]

    refused = move(scp.port, identifier("STUDY", StudyInstanceUID=uid), DEST, calling=ECHO_ONLY)
    assert [int(s.Status) for s in refused] == [status.NOT_AUTHORIZED]
    refused_get, _ = get(scp.port, identifier("STUDY", StudyInstanceUID=uid), {}, calling=ECHO_ONLY)
    assert [int(s.Status) for s in refused_get] == [status.NOT_AUTHORIZED]


def test_movescu_unknown_destination(scp: RunningScp, samples: list[Path]) -> None:
    result = dcmtk.movescu(
        scp.port,
        {"StudyInstanceUID": study_uid(samples[0])},
        destination="NOBODY",
        level="STUDY",
        calling=MODALITY,
        called=AE_TITLE,
    )
    assert dcmtk.final_status(result.output) == status.MOVE_DESTINATION_UNKNOWN, result.output


def test_a_facility_retrieves_only_its_own_studies(
    scp: RunningScp, facility: FacilityRef, tmp_path: Path
) -> None:
    runtime = scp.runtime
    other = register_facility(
        runtime,
        "other",
        [{"aeTitle": OTHER}, {"aeTitle": "OTHERDEST", "host": LOOPBACK, "port": free_port()}],
    )
    hidden = make_instance(tmp_path / "h", StudyInstanceUID="1.2.826.0.9.1", PatientID="P9")
    ingest_file(runtime, other, hidden)
    mine = make_instance(tmp_path / "m", StudyInstanceUID="1.2.826.0.9.2")
    ingest_file(runtime, facility, mine)

    with dcmtk.StoreSCP(tmp_path / "dest", ae_title=DEST) as destination:
        register_destination(runtime, destination.port)
        moved = move(scp.port, identifier("STUDY", StudyInstanceUID="1.2.826.0.9.1"), DEST)
        assert final_counts(moved) == (
            status.SUCCESS,
            {"completed": 0, "failed": 0, "warning": 0},
        )
        # Another facility's AE is no destination for st-mary.
        theirs = move(scp.port, identifier("STUDY", StudyInstanceUID="1.2.826.0.9.2"), "OTHERDEST")
        assert [int(s.Status) for s in theirs] == [status.MOVE_DESTINATION_UNKNOWN]
        assert destination.files() == []

    statuses, received = get(
        scp.port,
        identifier("STUDY", StudyInstanceUID="1.2.826.0.9.1\\1.2.826.0.9.2"),
        {"1.2.840.10008.5.1.4.1.1.2": [ExplicitVRLittleEndian]},
    )
    assert final_counts(statuses)[1]["completed"] == 1
    assert set(received) == {sop_instance_uid(mine)}
