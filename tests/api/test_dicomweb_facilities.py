"""An administrator who sees several facilities never gets their data mixed in one answer.

North and south each hold a study with the same Study Instance UID (each facility's copy is
its own). Retrieval answers one facility at a time: without ``?facility=NAME`` a UID two
facilities hold is a 409 naming them; with it, that facility's data only. QIDO answers one
result per facility, each RetrieveURL naming its facility. Over real HTTP (uvicorn).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from noctis.index.models import Study
from support.web import client_for

OHIF_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"


@pytest.fixture
def shared(clients, dw):
    """North: the study's two instances; south: the first of them only, as another patient."""
    made = dw.build_study(["explicit", "multiframe"], patient_name="North^Nora")
    assert dw.stow(clients("rad_north"), list(made.files.values())).status_code == 200
    first_uid, first = next(iter(made.files.items()))
    ds = dcmread(io.BytesIO(first))
    ds.PatientName = "South^Sam"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    assert dw.stow(clients("rad_south"), [out.getvalue()]).status_code == 200
    return made, first_uid


@pytest.fixture
def admin(live_server, tokens) -> Iterator[httpx.Client]:
    with client_for(live_server, tokens["admin"]) as client:
        yield client


def _names(instances: list[dict]) -> set[str]:
    return {i["00100010"]["Value"][0]["Alphabetic"] for i in instances}


def test_metadata_of_a_uid_two_facilities_hold_is_409_until_one_is_chosen(admin, shared):
    made, _ = shared
    url = f"/dicom-web/studies/{made.study_uid}/metadata"
    ambiguous = admin.get(url)
    assert ambiguous.status_code == 409
    detail = ambiguous.json()["detail"]
    assert "north, south" in detail and "?facility=NAME" in detail
    north = admin.get(url, params={"facility": "north"})
    assert north.status_code == 200 and len(north.json()) == 2
    assert _names(north.json()) == {"North^Nora"}
    south = admin.get(url, params={"facility": "south"})
    assert south.status_code == 200 and len(south.json()) == 1
    assert _names(south.json()) == {"South^Sam"}
    # Its bulk data URIs name the facility, so following one gives the same facility's data.
    uri = south.json()[0]["7FE00010"]["BulkDataURI"]
    assert uri.endswith("/bulkdata/7FE00010?facility=south")
    bulk = admin.get(uri, headers={"Accept": "multipart/related"})
    assert bulk.status_code == 200


def test_retrieval_frames_and_rendering_answer_one_facility_at_a_time(admin, shared, dw):
    made, first_uid = shared
    instance = (
        f"/dicom-web/studies/{made.study_uid}/series/{made.series[first_uid]}/instances/{first_uid}"
    )
    for path, accept in [
        ("", "multipart/related; type=application/dicom"),
        ("/frames/1", OHIF_ACCEPT),
        ("/rendered", "image/jpeg"),
        ("/thumbnail", "image/jpeg"),
    ]:
        response = admin.get(instance + path, headers={"Accept": accept})
        assert response.status_code == 409, (path, response.text)
        chosen = admin.get(
            instance + path, headers={"Accept": accept}, params={"facility": "south"}
        )
        assert chosen.status_code == 200, (path, chosen.text)
    study = admin.get(
        f"/dicom-web/studies/{made.study_uid}",
        params={"facility": "south"},
        headers={"Accept": "multipart/related; type=application/dicom"},
    )
    parts = dw.split_multipart(study)
    assert len(parts) == 1  # south's copy only
    assert dcmread(io.BytesIO(parts[0][1])).PatientName == "South^Sam"


def test_qido_answers_each_facility_s_copy_apart_with_its_facility_named(admin, shared):
    made, _ = shared
    results = admin.get("/dicom-web/studies", params={"StudyInstanceUID": made.study_uid}).json()
    assert len(results) == 2
    by_url = {r["00081190"]["Value"][0].rsplit("?", 1)[1]: r for r in results}
    assert set(by_url) == {"facility=north", "facility=south"}
    assert by_url["facility=south"]["00201208"]["Value"] == [1]
    assert by_url["facility=north"]["00201208"]["Value"] == [2]
    south = admin.get(
        f"/dicom-web/studies/{made.study_uid}/instances", params={"facility": "south"}
    ).json()
    assert len(south) == 1
    # What a RetrieveURL says is what it retrieves.
    retrieve = by_url["facility=south"]["00081190"]["Value"][0]
    url = httpx.URL(retrieve)
    metadata = admin.get(url.copy_with(path=url.path + "/metadata"))
    assert metadata.status_code == 200 and _names(metadata.json()) == {"South^Sam"}


def test_a_one_facility_user_needs_no_choice_and_cannot_choose_another(live_server, tokens, shared):
    made, _ = shared
    url = f"/dicom-web/studies/{made.study_uid}/metadata"
    with client_for(live_server, tokens["rad_north"]) as north:
        assert _names(north.get(url).json()) == {"North^Nora"}
        assert north.get(url, params={"facility": "south"}).status_code == 404
        search = north.get("/dicom-web/studies", params={"StudyInstanceUID": made.study_uid})
        assert "?" not in search.json()[0]["00081190"]["Value"][0]
        chosen = north.get(
            "/dicom-web/studies",
            params={"StudyInstanceUID": made.study_uid, "facility": "south"},
        )
        assert chosen.status_code == 404  # not theirs: as if it did not exist


@pytest.mark.parametrize(
    ("user", "facility"),
    [("rad_north", "south"), ("rad_north", "nowhere"), ("admin", "nowhere")],
)
def test_a_facility_one_may_not_choose_is_404_on_every_service(
    live_server, tokens, shared, dw, runtime, user, facility
):
    """``?facility=`` is resolved once for every service: one the caller has not (another
    facility, or none of that name) is 404 for QIDO, retrieval, frames and STOW alike (QIDO
    answered an empty 200 and STOW 403 before), and nothing is stored."""
    made, first_uid = shared
    instance = (
        f"/dicom-web/studies/{made.study_uid}/series/{made.series[first_uid]}/instances/{first_uid}"
    )
    fresh = dw.build_study(["explicit"])
    with client_for(live_server, tokens[user]) as client:
        chosen = {"facility": facility}
        answers = {
            "qido": client.get("/dicom-web/studies", params=chosen),
            "metadata": client.get(f"/dicom-web/studies/{made.study_uid}/metadata", params=chosen),
            "frames": client.get(
                instance + "/frames/1", params=chosen, headers={"Accept": OHIF_ACCEPT}
            ),
            "stow": dw.stow(client, list(fresh.files.values()), facility=facility),
        }
    for service, answer in answers.items():
        assert answer.status_code == 404, (service, answer.text)
        assert answer.json()["detail"] == f"Facility {facility!r} not found", service
    with runtime.sessions() as session:
        count = select(func.count()).select_from(Study)
        stored = session.scalar(count.where(Study.study_instance_uid == fresh.study_uid))
    assert stored == 0
