"""DELETE over DICOMweb and the REST API, through the real HTTP stack (uvicorn): admins only,
facility by facility, audited, idempotent (a second DELETE is 404), refused on legal hold;
the consistency check's REST side and metrics."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from noctis.core.deletion import sweep_tombstones
from noctis.index.accounts import AuditRow
from support.archive import index_counts, stored_object_keys
from support.web import client_for


@pytest.fixture
def web(live_server, tokens) -> Iterator[dict[str, httpx.Client]]:
    """A client per test user on the live server."""
    clients = {name: client_for(live_server, token) for name, token in tokens.items()}
    yield clients
    for client in clients.values():
        client.close()


@pytest.fixture
def north_study(web, dw):
    made = dw.build_study(["explicit", "implicit", "rle"], patient_name="North^Nora")
    assert dw.stow(web["rad_north"], list(made.files.values())).status_code == 200
    return made


def _audit(runtime, action: str) -> list[AuditRow]:
    runtime.audit.flush()
    with runtime.reader() as session:
        return list(
            session.scalars(select(AuditRow).where(AuditRow.action == action).order_by(AuditRow.id))
        )


def test_an_admin_deletes_a_study_and_it_is_gone_everywhere(web, runtime, north_study):
    admin = web["admin"]
    study = north_study.study_uid
    stored = stored_object_keys(runtime.store)
    assert stored

    response = admin.delete(f"/dicom-web/studies/{study}")

    assert response.status_code == 204
    for client in (admin, web["rad_north"]):
        assert client.get("/dicom-web/studies", params={"StudyInstanceUID": study}).json() == []
        assert client.get(f"/dicom-web/studies/{study}/metadata").status_code == 404
    assert index_counts(runtime)["instance"] == 0
    assert admin.delete(f"/dicom-web/studies/{study}").status_code == 404  # idempotent
    sweep_tombstones(runtime)  # the app under test has no task queue: sweep as the worker would
    assert stored_object_keys(runtime.store) == set()
    success, not_found = _audit(runtime, "delete")[-2:]
    assert (success.actor, success.outcome, success.detail["instances"]) == ("admin", "success", 3)
    assert success.detail["bytes"] == sum(len(data) for data in north_study.files.values())
    assert (not_found.outcome, not_found.study_instance_uid) == ("failure", study)


def test_series_and_instances_are_deleted_one_by_one(web, runtime, north_study):
    admin = web["admin"]
    study = north_study.study_uid
    sop, other, third = list(north_study.files)
    series = north_study.series[sop]
    url = f"/dicom-web/studies/{study}/series/{series}/instances/{sop}"

    assert admin.delete(url).status_code == 204
    assert admin.get(url).status_code == 404
    assert admin.delete(url).status_code == 404
    response = admin.delete(f"/api/studies/{study}/series/{north_study.series[other]}")
    assert response.status_code == 200
    assert response.json()["instances"] == 1 and not response.json()["study_removed"]
    [left] = admin.get("/dicom-web/studies", params={"StudyInstanceUID": study}).json()
    assert left["00201208"]["Value"] == [1]  # NumberOfStudyRelatedInstances
    assert admin.get(f"/dicom-web/studies/{study}/series/{north_study.series[third]}").is_success


def test_only_administrators_may_delete(web, runtime, north_study):
    study = north_study.study_uid
    before = index_counts(runtime)
    for user in ("rad_north", "ref_north", "rad_south"):
        assert web[user].delete(f"/dicom-web/studies/{study}").status_code == 403, user
        assert web[user].delete(f"/api/studies/{study}").status_code == 403, user
        assert web[user].put(f"/api/studies/{study}/hold", json={"reason": "x"}).status_code == 403
    assert index_counts(runtime) == before
    denied = [e for e in _audit(runtime, "delete") if e.outcome == "denied"]
    assert {e.actor for e in denied} == {"rad_north", "ref_north", "rad_south"}


def test_a_uid_of_two_facilities_is_deleted_one_facility_at_a_time(web, runtime, dw):
    made = dw.build_study(["explicit"])
    parts = list(made.files.values())
    assert dw.stow(web["rad_north"], parts).status_code == 200
    assert dw.stow(web["rad_south"], parts).status_code == 200
    url = f"/dicom-web/studies/{made.study_uid}"

    ambiguous = web["admin"].delete(url)
    assert ambiguous.status_code == 409 and "facility=NAME" in ambiguous.json()["detail"]
    assert web["admin"].delete(url, params={"facility": "north"}).status_code == 204

    assert web["rad_north"].get(url).status_code == 404
    assert web["rad_south"].get(url).status_code == 200  # south's copy is its own


def test_a_study_on_legal_hold_is_not_deleted(web, runtime, north_study):
    admin = web["admin"]
    study = north_study.study_uid
    hold = admin.put(f"/api/studies/{study}/hold", json={"reason": "court order 7/2026"})
    assert hold.status_code == 200 and hold.json()["placed_by"] == "admin"
    sop = next(iter(north_study.files))

    for url in (
        f"/dicom-web/studies/{study}",
        f"/dicom-web/studies/{study}/series/{north_study.series[sop]}",
        f"/api/studies/{study}/series/{north_study.series[sop]}/instances/{sop}",
    ):
        refused = admin.delete(url)
        assert refused.status_code == 409, url
        assert "legal hold" in refused.json()["detail"]
        assert "court order 7/2026" in refused.json()["detail"]
    assert index_counts(runtime)["instance"] == 3
    assert admin.get(f"/api/studies/{study}/hold").json()["reason"] == "court order 7/2026"

    assert admin.delete(f"/api/studies/{study}/hold").status_code == 204
    assert admin.get(f"/api/studies/{study}/hold").status_code == 404
    assert admin.delete(f"/api/studies/{study}").json()["instances"] == 3
    operations = [e.detail["operation"] for e in _audit(runtime, "legal-hold")]
    assert operations == ["place", "clear"]


def test_the_consistency_check_over_rest_and_metrics(web, runtime, north_study):
    admin = web["admin"]
    assert web["rad_north"].post("/api/consistency/check").status_code == 403
    assert web["rad_north"].get("/api/consistency").status_code == 403
    some_key = next(iter(stored_object_keys(runtime.store)))
    runtime.store.purge(some_key)

    report = admin.post("/api/consistency/check").json()

    assert report["missing"] == [some_key] and report["checked_rows"] == 3
    summary = admin.get("/api/consistency").json()
    assert summary["counts"]["missing"] == {"open": 1}
    assert [f["object_key"] for f in summary["missing"]] == [some_key]
    admin.delete(f"/dicom-web/studies/{north_study.study_uid}")
    metrics = httpx.get(str(admin.base_url).rstrip("/") + "/metrics").text
    assert "noctis_deletion_tombstones_pending 4.0" in metrics  # 3 objects + derived prefix
    assert 'noctis_consistency_findings{kind="missing",state="open"} 1.0' in metrics
    # The row without its object was deleted with its study: the next check closes the finding.
    sweep_tombstones(runtime)
    assert admin.post("/api/consistency/check").json()["missing"] == []
    assert admin.get("/api/consistency").json()["counts"]["missing"] == {"resolved": 1}
