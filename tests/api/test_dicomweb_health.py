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


def test_readyz_reports_a_missing_object_store(app, archive):
    shutil.rmtree(archive.store.root)  # the embedded object directory is gone
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
