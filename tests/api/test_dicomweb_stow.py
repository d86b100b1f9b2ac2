"""STOW-RS: storing through the one write path, the standard response, refusals."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from noctis.index.models import Instance, Study
from noctis.settings import DuplicatePolicy
from support.damaged import damaged_instances, write_deflated_bomb
from support.memory import PeakRss

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILURE_REASON = "00081197"
RETRIEVE_URL = "00081190"


def _count(runtime, model=Instance) -> int:
    with runtime.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_stores_every_transfer_syntax_and_answers_with_references(clients, dw, runtime):
    kinds = ["explicit", "implicit", "big_endian", "jpeg_baseline", "jpeg2000", "rle", "deflate"]
    study = dw.build_study(kinds)
    response = dw.stow(clients("rad_north"), list(study.files.values()))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    body = response.json()
    assert body[RETRIEVE_URL]["Value"][0].endswith(f"/dicom-web/studies/{study.study_uid}")
    referenced = body[REFERENCED_SOP_SEQUENCE]["Value"]
    assert {item["00081155"]["Value"][0] for item in referenced} == set(study.files)
    for item in referenced:
        assert "/instances/" in item[RETRIEVE_URL]["Value"][0]
    assert FAILED_SOP_SEQUENCE not in body
    assert _count(runtime) == len(kinds)


def test_the_same_instance_twice_is_a_success_and_stored_once(clients, dw, runtime):
    study = dw.build_study(["explicit"])
    client = clients("rad_north")
    assert dw.stow(client, list(study.files.values())).status_code == 200
    assert dw.stow(client, list(study.files.values())).status_code == 200
    assert _count(runtime) == 1


def test_another_data_set_under_a_stored_uid_keeps_the_first_or_fails_when_rejecting(
    clients, dw, runtime
):
    """keep-first (the default): 200 and the first data set kept; reject: 409 and 0x0111."""
    study = dw.build_study(["explicit"])
    client = clients("rad_north")
    sop_uid = next(iter(study.files))
    assert dw.stow(client, list(study.files.values())).status_code == 200
    changed = dw.sample_bytes(
        "explicit",
        StudyInstanceUID=study.study_uid,
        SeriesInstanceUID=study.series[sop_uid],
        SOPInstanceUID=sop_uid,
        PatientName="Other^Name",
    )
    response = dw.stow(client, [changed])
    assert response.status_code == 200, response.text
    assert response.json()[REFERENCED_SOP_SEQUENCE]["Value"][0]["00081155"]["Value"] == [sop_uid]
    with runtime.sessions() as session:
        assert session.scalar(select(Study.patient_name)) != "Other^Name"
    assert _count(runtime) == 1

    runtime.settings.duplicate_policy = DuplicatePolicy.REJECT
    response = dw.stow(client, [changed])
    assert response.status_code == 409
    failed = response.json()[FAILED_SOP_SEQUENCE]["Value"][0]
    assert failed[FAILURE_REASON]["Value"] == [0x0111]
    assert failed["00081155"]["Value"] == [sop_uid]
    assert "Warning" in response.headers


def test_an_instance_of_another_study_than_the_path_fails_with_43265(clients, dw, runtime):
    study = dw.build_study(["explicit"])
    other = dw.build_study(["explicit"])
    parts = list(study.files.values()) + list(other.files.values())
    response = dw.stow(clients("rad_north"), parts, study=study.study_uid)

    assert response.status_code == 202
    body = response.json()
    failed = body[FAILED_SOP_SEQUENCE]["Value"]
    assert len(failed) == 1
    assert failed[0][FAILURE_REASON]["Value"] == [43265]
    assert failed[0]["00081155"]["Value"] == list(other.files)
    assert len(body[REFERENCED_SOP_SEQUENCE]["Value"]) == 1
    assert _count(runtime) == 1


def test_all_parts_failing_is_409_and_stores_nothing(clients, dw, runtime):
    response = dw.stow(clients("rad_north"), [b"not dicom at all", b"\x00" * 200])
    assert response.status_code == 409
    failed = response.json()[FAILED_SOP_SEQUENCE]["Value"]
    assert [f[FAILURE_REASON]["Value"] for f in failed] == [[0xC000], [0xC000]]
    assert _count(runtime) == 0 and _count(runtime, Study) == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"--b\r\nContent-Type: application/dicom\r\n\r\nDICM", "closing boundary"),
        (b"no boundary anywhere", "no boundary"),
        (b"--b--\r\n", "no parts"),
        (b"--b\r\nbroken header line\r\n\r\nx\r\n--b--", "header"),
        (b"", "no boundary"),
    ],
)
def test_a_malformed_body_is_400_with_a_reason_and_stores_nothing(clients, runtime, body, reason):
    # A complete first instance in front of the damage: still nothing may be stored.
    response = clients("rad_north").post(
        "/dicom-web/studies",
        content=body,
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
    )
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert _count(runtime) == 0


def test_a_truncated_body_after_a_good_part_stores_nothing(clients, dw, runtime):
    study = dw.build_study(["explicit", "implicit"])
    body, content_type = dw.multipart_body(list(study.files.values()))
    truncated = body[: len(body) - 400]
    response = clients("rad_north").post(
        "/dicom-web/studies", content=truncated, headers={"Content-Type": content_type}
    )
    assert response.status_code == 400
    assert _count(runtime) == 0


@pytest.mark.parametrize(
    "content_type",
    [
        "application/dicom",
        'multipart/related; type="application/dicom+json"; boundary=b',
        "application/json",
    ],
)
def test_wrong_content_type_is_415(clients, content_type):
    response = clients("rad_north").post(
        "/dicom-web/studies", content=b"x", headers={"Content-Type": content_type}
    )
    assert response.status_code == 415
    assert response.json()["detail"]


def test_missing_boundary_is_400(clients):
    response = clients("rad_north").post(
        "/dicom-web/studies",
        content=b"x",
        headers={"Content-Type": 'multipart/related; type="application/dicom"'},
    )
    assert response.status_code == 400
    assert "boundary" in response.json()["detail"]


def test_a_read_only_role_may_not_store(clients, dw, runtime):
    study = dw.build_study(["explicit"])
    response = dw.stow(clients("ref_north"), list(study.files.values()))
    assert response.status_code == 403
    assert _count(runtime) == 0


def test_an_administrator_must_name_the_facility(clients, dw, runtime):
    study = dw.build_study(["explicit"])
    admin = clients("admin")
    refused = dw.stow(admin, list(study.files.values()))
    assert refused.status_code == 400
    assert "facility" in refused.json()["detail"]
    stored = dw.stow(admin, list(study.files.values()), facility="south")
    assert stored.status_code == 200
    # ... and it landed in south: south sees it, north does not.
    assert clients("rad_south").get(f"/dicom-web/studies/{study.study_uid}/metadata").is_success
    assert (
        clients("rad_north").get(f"/dicom-web/studies/{study.study_uid}/metadata").status_code
        == 404
    )


def test_a_facility_not_granted_is_refused(clients, dw, runtime):
    study = dw.build_study(["explicit"])
    response = dw.stow(clients("rad_north"), list(study.files.values()), facility="south")
    assert response.status_code == 404  # as every service answers it: as if it did not exist
    assert _count(runtime) == 0


def test_the_spool_is_left_empty(clients, dw, settings):
    study = dw.build_study(["explicit", "jpeg2000"])
    assert dw.stow(clients("rad_north"), list(study.files.values())).status_code == 200
    assert dw.stow(clients("rad_north"), [b"junk"]).status_code == 409
    spool = settings.resolved_spool_dir()
    assert not list(spool.glob("stow-*"))


def test_a_large_instance_streams_through_a_chunked_body(clients, dw, runtime):
    study = dw.build_study(["multiframe"])
    body, content_type = dw.multipart_body(list(study.files.values()))

    def chunks():
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    response = clients("rad_north").post(
        "/dicom-web/studies", content=chunks(), headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text
    assert _count(runtime) == 1


def test_stow_is_audited(clients, dw, runtime):
    from noctis.index.accounts import AuditRow

    study = dw.build_study(["explicit"])
    dw.stow(clients("rad_north"), list(study.files.values()))
    with runtime.sessions() as session:
        events = session.scalars(select(AuditRow).where(AuditRow.action == "stow")).all()
    assert [(e.outcome, e.study_instance_uid) for e in events] == [("success", study.study_uid)]


# --- damaged and hostile instances over real HTTP (uvicorn on loopback) --------------------


@pytest.fixture
def http(live_server, tokens):
    from support.web import client_for

    with client_for(live_server, tokens["rad_north"]) as client:
        yield client


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", damaged_instances(), ids=lambda case: case.name)
def test_a_damaged_instance_fails_alone_and_the_others_are_stored(http, dw, runtime, case):
    good = dw.build_study(["explicit"])
    response = dw.stow(http, [case.data, *good.files.values()])

    assert response.status_code == 202, response.text
    body = response.json()
    (failed,) = body[FAILED_SOP_SEQUENCE]["Value"]
    assert failed[FAILURE_REASON]["Value"] == [0xC000]
    assert case.comment in response.headers["Warning"]
    (stored,) = body[REFERENCED_SOP_SEQUENCE]["Value"]
    assert stored["00081155"]["Value"] == list(good.files)
    assert _count(runtime) == 1


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_only_damaged_instances_is_409_and_stores_nothing(http, runtime):
    damaged = damaged_instances()
    response = http.post(
        "/dicom-web/studies",
        content=_body([case.data for case in damaged]),
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
    )
    assert response.status_code == 409
    failed = response.json()[FAILED_SOP_SEQUENCE]["Value"]
    assert [item[FAILURE_REASON]["Value"] for item in failed] == [[0xC000]] * len(damaged)
    assert _count(runtime) == 0 and _count(runtime, Study) == 0


def _body(parts: list[bytes]) -> bytes:
    head = b"--b\r\nContent-Type: application/dicom\r\n\r\n"
    return b"".join(head + part + b"\r\n" for part in parts) + b"--b--\r\n"


def test_a_deflate_bomb_is_refused_and_memory_stays_bounded(http, runtime, tmp_path):
    """306 KB sent, 300 MiB once inflated: refused past the cap, the server's RSS (this
    process runs uvicorn) growing by far less than the inflated size."""
    bomb = write_deflated_bomb(tmp_path / "bomb.dcm", 300 << 20).read_bytes()
    runtime.settings.max_inflated_mb = 100
    with PeakRss() as rss:
        response = http.post(
            "/dicom-web/studies",
            content=_body([bomb]),
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
        )
    assert response.status_code == 409
    (failed,) = response.json()[FAILED_SOP_SEQUENCE]["Value"]
    assert failed[FAILURE_REASON]["Value"] == [0xC000]
    assert "inflated data set exceeds the 100 MiB limit" in response.headers["Warning"]
    assert rss.growth < 50 << 20, f"RSS grew by {rss.growth >> 20} MiB"
    assert _count(runtime) == 0
