"""Health, readiness and metrics: unauthenticated, and metrics by route template."""

from __future__ import annotations

import shutil

from fastapi.testclient import TestClient


def test_healthz_and_readyz(app):
    client = TestClient(app)
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"index": "ok", "objects": "ok"}


def test_readyz_reports_a_missing_object_store(app, runtime):
    shutil.rmtree(runtime.store.root)  # the embedded object directory is gone
    response = TestClient(app).get("/readyz")
    assert response.status_code == 503
    assert response.json()["index"] == "ok"
    assert "missing" in response.json()["objects"]


def test_metrics_count_requests_by_route_template(clients, dw):
    client = clients("rad_north")
    study = dw.build_study(["explicit"])
    dw.stow(client, list(study.files.values()))
    client.get(f"/dicom-web/studies/{study.study_uid}/metadata")
    client.get("/dicom-web/studies/1.2.3/metadata")
    text = clients(None).get("/metrics").text
    assert 'route="/dicom-web/studies/{study}/metadata",status="200"' in text
    assert 'route="/dicom-web/studies/{study}/metadata",status="404"' in text
    assert "noctis_http_request_duration_seconds_bucket" in text
    assert study.study_uid not in text  # UIDs never become label values


def test_an_object_store_outage_is_503_not_500(clients, dw, runtime):
    from noctis.storage import StorageUnavailable

    study = dw.build_study(["explicit"])
    client = clients("rad_north")
    assert dw.stow(client, list(study.files.values())).status_code == 200

    def unavailable(*args, **kwargs):
        raise StorageUnavailable("connection refused")

    runtime.store.get_range = unavailable  # type: ignore[method-assign]
    runtime.store.get = unavailable  # type: ignore[method-assign]
    sop_uid = next(iter(study.files))
    url = (
        f"/dicom-web/studies/{study.study_uid}/series/{study.series[sop_uid]}"
        f"/instances/{sop_uid}/frames/1"
    )
    response = client.get(url)
    assert response.status_code == 503
    assert "object store" in response.json()["detail"]


def test_an_index_outage_is_503_not_500(clients, runtime, settings):
    client = clients("rad_north")
    runtime.engine.dispose()
    index = settings.data_dir / "index.sqlite3"
    index.rename(index.with_suffix(".moved"))
    index.mkdir()  # a directory where the database file was: sqlite cannot open it
    response = client.get("/dicom-web/studies")
    assert response.status_code == 503
