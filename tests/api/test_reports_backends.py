"""Reports over REST on SQLite and PostgreSQL (the production index): signing with the
password through the shared lockout, the referring physician's view, other facilities' 404s;
and who may not sign at all: an account without a local password (OIDC); a facility
administrator's scope over templates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from noctis.api.app import create_app
from noctis.core.runtime import Runtime
from noctis.index.accounts import User
from support.archive import embedded_settings, open_runtime, register_facility
from support.web import client_for, create_user, token_for

TEXT = "FINDINGS:\nNormal.\n\nIMPRESSION: Normal."


@pytest.fixture(params=["sqlite", "postgres"])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    url = (
        request.getfixturevalue("pg_url")
        if request.param == "postgres"
        else f"sqlite:///{tmp_path / 'index.sqlite3'}"
    )
    runtime = open_runtime(embedded_settings(tmp_path, database_url=url))
    for name in ("north", "south"):
        register_facility(runtime, name, [])
    yield runtime
    runtime.close()


@pytest.fixture
def clients(archive: Runtime):
    app = create_app(archive.settings, archive)
    users = {
        "rad": ("radiologist", ["north"]),
        "ref": ("referring-physician", ["north"]),
        "ref_south": ("referring-physician", ["south"]),
        "fadmin": ("facility-admin", ["north"]),
        "oidc_rad": ("radiologist", ["north"]),
    }
    passwords = {u: create_user(archive, u, role, f) for u, (role, f) in users.items()}
    with archive.sessions.begin() as session:  # provisioned by the identity provider
        session.execute(update(User).where(User.username == "oidc_rad").values(password_hash=None))
    made = {u: client_for(app, token_for(archive, u)) for u in users}
    return made, passwords


def test_sign_and_read_on_each_index(archive: Runtime, clients, dw) -> None:
    made, passwords = clients
    rad, ref = made["rad"], made["ref"]
    built = dw.build_study(["explicit"])
    assert dw.stow(rad, list(built.files.values())).status_code == 200
    url = f"/api/studies/north/{built.study_uid}/report"
    assert rad.put(f"{url}/draft", json={"text": TEXT}).status_code == 200
    assert (
        rad.post(f"{url}/sign", json={"state": "preliminary", "password": "x"}).status_code == 403
    )
    prelim = rad.post(f"{url}/sign", json={"state": "preliminary", "password": passwords["rad"]})
    assert prelim.status_code == 200, prelim.text
    assert ref.get(url).status_code == 404  # preliminary only: not for referring physicians
    final = rad.post(f"{url}/sign", json={"state": "final", "password": passwords["rad"]})
    assert [v["state"] for v in final.json()["versions"]] == ["preliminary", "final"]
    assert [v["number"] for v in ref.get(url).json()["versions"]] == [2]
    assert ref.get(f"{url}/versions/1/pdf").status_code == 404  # the preliminary one
    assert ref.get(f"{url}/versions/2/pdf").content.startswith(b"%PDF-")
    assert made["ref_south"].get(url).status_code == 404


def test_an_account_without_a_local_password_cannot_sign_and_is_told_why(clients, dw) -> None:
    made, _ = clients
    oidc = made["oidc_rad"]
    built = dw.build_study(["explicit"])
    assert dw.stow(made["rad"], list(built.files.values())).status_code == 200
    url = f"/api/studies/north/{built.study_uid}/report"
    assert oidc.put(f"{url}/draft", json={"text": TEXT}).status_code == 200
    refused = oidc.post(f"{url}/sign", json={"state": "final", "password": ""})
    assert refused.status_code == 403
    assert "local password" in refused.json()["detail"]
    assert oidc.get(url).json()["versions"] == []


def test_a_facility_administrator_manages_only_its_facilitys_templates(clients) -> None:
    made, _ = clients
    fadmin = made["fadmin"]
    mine = fadmin.post(
        "/api/report-templates", json={"facility": "north", "name": "N", "text": "t"}
    )
    assert mine.status_code == 201
    assert (
        fadmin.post("/api/report-templates", json={"facility": "south", "name": "S", "text": "t"})
    ).status_code == 404
    assert fadmin.post("/api/report-templates", json={"name": "G", "text": "t"}).status_code == 403
    tid = mine.json()["id"]
    changed = fadmin.put(
        f"/api/report-templates/{tid}",
        json={"facility": "north", "name": "N2", "text": "t2", "modality": "mr"},
    )
    assert (changed.status_code, changed.json()["modality"]) == (200, "MR")
    assert (
        made["rad"].get("/api/report-templates", params={"modality": "MR"}).json()[0]["name"]
        == "N2"
    )
    assert made["rad"].delete(f"/api/report-templates/{tid}").status_code == 403
    assert fadmin.delete(f"/api/report-templates/{tid}").status_code == 204
    assert made["rad"].get(f"/api/report-templates/{tid}").status_code == 404
