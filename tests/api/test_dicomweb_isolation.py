"""Authentication and facility isolation on every DICOMweb endpoint, and their audit trail."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from noctis.index.accounts import AuditRow


@pytest.fixture
def south_study(clients, dw):
    made = dw.build_study(["explicit", "multiframe"], patient_name="South^Sam")
    assert dw.stow(clients("rad_south"), list(made.files.values())).status_code == 200
    return made


def _retrieval_urls(study) -> list[str]:
    sop_uid = next(iter(study.files))
    series = f"/dicom-web/studies/{study.study_uid}/series/{study.series[sop_uid]}"
    instance = f"{series}/instances/{sop_uid}"
    return [
        f"/dicom-web/studies/{study.study_uid}",
        f"/dicom-web/studies/{study.study_uid}/metadata",
        f"/dicom-web/studies/{study.study_uid}/rendered",
        f"/dicom-web/studies/{study.study_uid}/thumbnail",
        series,
        f"{series}/metadata",
        f"{series}/rendered",
        f"{series}/thumbnail",
        instance,
        f"{instance}/metadata",
        f"{instance}/frames/1",
        f"{instance}/frames/1/rendered",
        f"{instance}/frames/1/thumbnail",
        f"{instance}/rendered",
        f"{instance}/thumbnail",
        f"{instance}/bulkdata/7FE00010",
    ]


def _search_urls(study) -> list[str]:
    sop_uid = next(iter(study.files))
    series_uid = study.series[sop_uid]
    return [
        f"/dicom-web/studies?StudyInstanceUID={study.study_uid}",
        "/dicom-web/studies?PatientName=South*",
        f"/dicom-web/studies/{study.study_uid}/series",
        f"/dicom-web/series?SeriesInstanceUID={series_uid}",
        f"/dicom-web/studies/{study.study_uid}/instances",
        f"/dicom-web/studies/{study.study_uid}/series/{series_uid}/instances",
        f"/dicom-web/instances?SOPInstanceUID={sop_uid}",
    ]


def test_everything_needs_authentication_except_health(clients, south_study, dw):
    anonymous = clients(None)
    for url in _retrieval_urls(south_study) + _search_urls(south_study):
        response = anonymous.get(url)
        assert response.status_code == 401, url
        assert "WWW-Authenticate" in response.headers
    assert dw.stow(anonymous, list(south_study.files.values())).status_code == 401
    for url in ("/healthz", "/readyz", "/metrics"):
        assert anonymous.get(url).status_code == 200, url


def test_a_wrong_token_is_401(app, south_study):
    from support.web import client_for

    client = client_for(app, "noctis_not-a-real-token")
    assert client.get("/dicom-web/studies").status_code == 401


def test_another_facility_is_invisible_everywhere(clients, south_study):
    north = clients("rad_north")
    for url in _retrieval_urls(south_study):
        response = north.get(url)
        assert response.status_code == 404, url
        assert b"South" not in response.content
    for url in _search_urls(south_study):
        response = north.get(url)
        assert response.status_code == 200, url
        assert response.json() == [], url


def test_the_owning_facility_and_the_administrator_see_it(clients, south_study):
    for user in ("rad_south", "admin"):
        client = clients(user)
        for url in _retrieval_urls(south_study):
            assert client.get(url).status_code == 200, (user, url)
        for url in _search_urls(south_study):
            assert len(client.get(url).json()) >= 1, (user, url)


def test_stow_into_another_facility_study_stays_separate(clients, dw, south_study, runtime):
    # North sends the very same instances: they become north's own copy, and neither
    # facility sees the other's.
    north = clients("rad_north")
    assert dw.stow(north, list(south_study.files.values())).status_code == 200
    admin = clients("admin").get(f"/dicom-web/studies?StudyInstanceUID={south_study.study_uid}")
    assert len(admin.json()) == 2
    assert len(north.get(f"/dicom-web/studies/{south_study.study_uid}/metadata").json()) == 2


def test_denied_reads_are_audited_with_the_holding_facility(clients, south_study, runtime):
    clients("rad_north").get(f"/dicom-web/studies/{south_study.study_uid}/metadata")
    clients("rad_north").get("/dicom-web/studies/1.2.3.999/metadata")
    with runtime.sessions() as session:
        events = session.scalars(select(AuditRow).where(AuditRow.action == "wado.metadata")).all()
        south_id = session.scalar(select(AuditRow.facility_id).where(AuditRow.action == "stow"))
    outcomes = [(e.outcome, e.study_instance_uid, e.facility_id) for e in events]
    assert ("denied", south_study.study_uid, south_id) in outcomes
    assert ("failure", "1.2.3.999", None) in outcomes


def test_successful_reads_are_audited(clients, south_study, runtime):
    client = clients("rad_south")
    for url in _retrieval_urls(south_study):
        client.get(url)
    with runtime.sessions() as session:
        actions = set(
            session.scalars(
                select(AuditRow.action).where(
                    AuditRow.outcome == "success",
                    AuditRow.study_instance_uid == south_study.study_uid,
                )
            )
        )
    assert {
        "wado.study",
        "wado.series",
        "wado.instance",
        "wado.metadata",
        "wado.frames",
        "wado.rendered",
        "wado.thumbnail",
        "wado.bulkdata",
        "stow",
    } <= actions
