"""The REST API beside DICOMweb: users and tokens (administrators), facilities, system."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from noctis.core.runtime import Runtime
from noctis.index.accounts import ApiToken, AuditRow
from support.archive import embedded_settings, open_runtime
from support.web import auth_app, client_for, create_user, login, running, token_for


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    runtime = open_runtime(embedded_settings(tmp_path), default_facility=True)
    yield runtime
    runtime.close()


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    return auth_app(runtime)


@pytest.fixture
def admin(runtime: Runtime, app: FastAPI) -> TestClient:
    create_user(runtime, "boss", "admin", facilities=[])
    return client_for(app, token_for(runtime, "boss"))


@pytest.fixture
def radiologist(runtime: Runtime, app: FastAPI) -> TestClient:
    create_user(runtime, "rad", "radiologist")
    return client_for(app, token_for(runtime, "rad"))


def test_admin_creates_a_user_whose_generated_password_is_shown_once(
    admin: TestClient, app: FastAPI
) -> None:
    created = admin.post(
        "/api/users",
        json={"username": "tech", "role": "technologist", "facilities": ["default"]},
    )
    assert created.status_code == 201
    body = created.json()
    assert body["facilities"] == ["default"] and body["source"] == "local"
    password = body["password"]
    assert password and len(password) >= 16
    assert "password" not in admin.get("/api/users/tech").json()
    browser = TestClient(app)
    login(browser, "tech", password)
    assert browser.get("/api/me").json()["role"] == "technologist"


def test_user_updates_and_refusals(admin: TestClient) -> None:
    admin.post("/api/users", json={"username": "rad", "role": "radiologist", "password": "p" * 10})
    changed = admin.patch(
        "/api/users/rad", json={"role": "referring-physician", "facilities": [], "enabled": False}
    )
    assert changed.status_code == 200
    assert changed.json()["role"] == "referring-physician" and changed.json()["enabled"] is False
    assert admin.post("/api/users", json={"username": "rad", "role": "admin"}).status_code == 422
    bad = admin.post("/api/users", json={"username": "x", "role": "admin", "facilities": ["nope"]})
    assert bad.status_code == 422 and "nope" in bad.json()["detail"]
    assert admin.patch("/api/users/ghost", json={"role": "admin"}).status_code == 404
    # The only administrator can neither be demoted nor delete themselves.
    assert admin.patch("/api/users/boss", json={"role": "radiologist"}).status_code == 409
    assert admin.delete("/api/users/boss").status_code == 409
    assert admin.delete("/api/users/rad").status_code == 204
    assert [u["username"] for u in admin.get("/api/users").json()] == ["boss"]


def test_non_admins_cannot_administer(radiologist: TestClient) -> None:
    for method, path in [
        ("GET", "/api/users"),
        ("POST", "/api/users"),
        ("GET", "/api/tokens"),
        ("POST", "/api/tokens"),
        ("GET", "/api/audit"),
        ("GET", "/api/system"),
    ]:
        assert radiologist.request(method, path, json={}).status_code == 403, path


def test_tokens_are_shown_once_listed_without_secret_and_revocable(
    admin: TestClient, app: FastAPI, runtime: Runtime
) -> None:
    create_user(runtime, "robot", "technologist")
    created = admin.post("/api/tokens", json={"username": "robot", "name": "modality router"})
    assert created.status_code == 201
    secret = created.json()["token"]
    robot = client_for(app, secret)
    assert robot.get("/api/me").json()["username"] == "robot"
    listed = admin.get("/api/tokens", params={"username": "robot"}).json()
    assert [t["name"] for t in listed] == ["modality router"]
    assert secret not in str(listed) and secret.startswith(listed[0]["prefix"])
    assert admin.delete(f"/api/tokens/{listed[0]['id']}").status_code == 204
    assert robot.get("/api/me").status_code == 401
    assert admin.delete(f"/api/tokens/{listed[0]['id']}").status_code == 404
    assert admin.get("/api/tokens", params={"username": "robot"}).json() == []
    with runtime.sessions() as session:
        operations = [
            e.detail["operation"]
            for e in session.scalars(select(AuditRow).where(AuditRow.action == "admin"))
        ]
    assert operations == ["token.create", "token.revoke"]


def test_expiring_token(admin: TestClient, runtime: Runtime) -> None:
    create_user(runtime, "robot", "technologist")
    created = admin.post("/api/tokens", json={"username": "robot", "expires_in_days": 30}).json()
    assert created["expires_at"] is not None


def test_deleting_a_user_removes_their_tokens(
    admin: TestClient, app: FastAPI, runtime: Runtime
) -> None:
    create_user(runtime, "robot", "technologist")
    robot = client_for(app, token_for(runtime, "robot"))
    assert admin.delete("/api/users/robot").status_code == 204
    assert robot.get("/api/me").status_code == 401
    with runtime.sessions() as session:
        owners = session.scalars(select(ApiToken).join(ApiToken.user)).all()
    assert [t.user.username for t in owners] == ["boss"]


def test_facilities_show_usage_and_admin_only_details(
    admin: TestClient, radiologist: TestClient
) -> None:
    mine = radiologist.get("/api/facilities").json()
    assert [(f["name"], f["studies"], f["size_bytes"]) for f in mine] == [("default", 0, 0)]
    assert mine[0]["ae_titles"] is None
    assert admin.get("/api/facilities/default").json()["ae_titles"] == ["*"]


def test_system_status(admin: TestClient) -> None:
    status = admin.get("/api/system").json()
    assert status["ready"] is True
    assert status["readiness"] == {"index": "ok", "objects": "ok"}
    assert status["counts"]["users"] == 1 and status["counts"]["studies"] == 0
    assert status["versions"]["database"] == "sqlite"
    assert status["versions"]["noctis"]


def test_docs_need_a_login_and_describe_the_api(app: FastAPI, admin: TestClient) -> None:
    anonymous = TestClient(app)
    for page in ("docs", "redoc"):
        response = anonymous.get(f"/{page}", follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == f"/login?next=%2F{page}"
        shown = admin.get(f"/{page}")
        assert shown.status_code == 200 and "/openapi.json" in shown.text
    refused = anonymous.get("/openapi.json")
    assert refused.status_code == 401 and "paths" not in refused.text
    paths = admin.get("/openapi.json").json()["paths"]
    assert {"/api/users", "/api/tokens", "/api/audit", "/api/facilities", "/api/system"} <= set(
        paths
    )
    assert "/login" not in paths  # pages, not API


def test_a_new_password_or_a_disable_ends_the_users_sessions(
    runtime: Runtime, app: FastAPI, admin: TestClient
) -> None:
    """Over real HTTP: what an administrator changes through PATCH /api/users logs the user
    out of every browser, and re-enabling the account does not bring old cookies back."""
    password = create_user(runtime, "rad", "radiologist")
    boss = token_for(runtime, "boss")
    with running(app) as base, client_for(base, boss) as administrator:

        def signed_in(secret: str) -> httpx.Client:
            browser = httpx.Client(base_url=base)
            login(browser, "rad", secret)
            assert browser.get("/api/me").status_code == 200
            return browser

        def patch(**changes: object) -> None:
            assert administrator.patch("/api/users/rad", json=changes).status_code == 200

        first, second = signed_in(password), signed_in(password)
        patch(display_name="Dr Rad")  # other changes leave the sessions alone
        assert first.get("/api/me").status_code == 200
        patch(password="a-new-password-1")
        assert first.get("/api/me").status_code == 401
        assert second.get("/api/me").status_code == 401
        third = signed_in("a-new-password-1")
        patch(enabled=False)
        assert third.get("/api/me").status_code == 401
        patch(enabled=True)
        assert third.get("/api/me").status_code == 401  # not revived
        assert first.get("/api/me").status_code == 401
        signed_in("a-new-password-1")  # the account itself works again
