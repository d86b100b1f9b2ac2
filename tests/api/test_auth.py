"""Login page, sessions, API tokens, first administrator, facility grants."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from noctis.api.auth import AccountError, add_user, ensure_first_admin
from noctis.api.auth.credentials import now
from noctis.api.auth.settings import AuthSettings
from noctis.archive import Archive
from noctis.index.accounts import ApiToken, AuditEvent, User, WebSession
from noctis.index.facilities import apply_facility
from noctis.index.migrate import alembic_config, current_revision, upgrade
from noctis.specs.facility import FacilitySpec
from support.web import auth_app, client_for, create_user, login, token_for


@pytest.fixture
def archive(accounts_archive: Archive) -> Archive:
    return accounts_archive


@pytest.fixture
def app(archive: Archive) -> FastAPI:
    return auth_app(archive)


@pytest.fixture
def browser(app: FastAPI) -> TestClient:
    return TestClient(app)


def test_migrations_down_to_0001_and_up_again(archive: Archive) -> None:
    """The accounts tables (0002), the PostgreSQL write function (0003) and the patient
    identity (0004) come and go with their migrations."""
    from alembic import command

    url = archive.settings.resolved_database_url()
    assert current_revision(url) == "0004"
    archive.engine.dispose()
    command.downgrade(alembic_config(url), "0001")
    assert current_revision(url) == "0001"
    upgrade(url)
    assert current_revision(url) == "0004"


def test_api_needs_credentials(browser: TestClient) -> None:
    response = browser.get("/api/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_login_page_is_a_form(browser: TestClient) -> None:
    response = browser.get("/login?next=/viewer")
    assert response.status_code == 200
    assert 'name="next" value="/viewer"' in response.text or 'value="/viewer"' in response.text
    assert "type=password" in response.text
    assert response.headers["cache-control"] == "no-store"


def test_login_sets_a_safe_cookie_and_logout_ends_the_session(
    archive: Archive, browser: TestClient
) -> None:
    password = create_user(archive, "rad", "radiologist")
    response = browser.post(
        "/login",
        data={"username": "rad", "password": password, "next": "/viewer?x=1"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/viewer?x=1"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # plain http on localhost must keep working
    me = browser.get("/api/me").json()
    assert me == {
        "username": "rad",
        "role": "radiologist",
        "method": "session",
        "facilities": ["default"],
    }
    assert browser.get("/logout", follow_redirects=False).status_code == 303
    assert browser.get("/api/me").status_code == 401
    with archive.sessions() as session:
        assert session.scalar(select(WebSession)) is None
        actions = session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions == ["login", "logout"]


def test_cookie_is_secure_over_https(archive: Archive, app: FastAPI) -> None:
    password = create_user(archive, "rad", "radiologist")
    client = TestClient(app, base_url="https://noctis.example")
    response = client.post(
        "/login", data={"username": "rad", "password": password}, follow_redirects=False
    )
    assert "secure" in response.headers["set-cookie"].lower()


def test_cookie_secure_can_be_forced(archive: Archive) -> None:
    password = create_user(archive, "rad", "radiologist")
    client = TestClient(auth_app(archive, AuthSettings(cookie_secure="always")))
    response = client.post(
        "/login", data={"username": "rad", "password": password}, follow_redirects=False
    )
    assert "secure" in response.headers["set-cookie"].lower()


def test_wrong_password_is_refused_and_audited(archive: Archive, browser: TestClient) -> None:
    create_user(archive, "rad", "radiologist")
    response = browser.post("/login", data={"username": "rad", "password": "nope-nope"})
    assert response.status_code == 401
    assert "Wrong user name or password" in response.text
    assert "noctis_session" not in response.headers.get("set-cookie", "")
    with archive.sessions() as session:
        event = session.scalars(select(AuditEvent)).one()
    assert (event.actor, event.action, event.outcome) == ("rad", "login", "denied")
    assert event.detail == {"reason": "bad-credentials"}


def test_repeated_failures_lock_the_account_out_for_that_client(
    archive: Archive, browser: TestClient
) -> None:
    password = create_user(archive, "rad", "radiologist")
    for _ in range(5):
        assert (
            browser.post("/login", data={"username": "rad", "password": "x" * 9}).status_code == 401
        )
    locked = browser.post("/login", data={"username": "rad", "password": password})
    assert locked.status_code == 429


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil"])
def test_login_never_redirects_off_site(archive: Archive, browser: TestClient, target: str) -> None:
    password = create_user(archive, "rad", "radiologist")
    response = browser.post(
        "/login",
        data={"username": "rad", "password": password, "next": target},
        follow_redirects=False,
    )
    assert response.headers["location"] == "/"


def test_secrets_are_stored_as_hashes(archive: Archive) -> None:
    password = create_user(archive, "rad", "radiologist")
    token = token_for(archive, "rad")
    with archive.sessions() as session:
        user = session.scalars(select(User)).one()
        stored = session.scalars(select(ApiToken)).one()
    assert user.password_hash is not None and user.password_hash.startswith("$argon2id$")
    assert password not in user.password_hash
    assert token not in stored.token_hash and len(stored.token_hash) == 64
    assert token.startswith(stored.prefix)


def test_api_token_acts_as_its_user_until_revoked(archive: Archive, app: FastAPI) -> None:
    create_user(archive, "robot", "technologist")
    token = token_for(archive, "robot")
    client = client_for(app, token)
    assert client.get("/api/me").json()["method"] == "token"
    with archive.sessions.begin() as session:
        session.execute(update(ApiToken).values(revoked_at=now()))
    assert client.get("/api/me").status_code == 401


def test_expired_token_is_refused(archive: Archive, app: FastAPI) -> None:
    create_user(archive, "robot", "technologist")
    token = token_for(archive, "robot")
    with archive.sessions.begin() as session:
        session.execute(update(ApiToken).values(expires_at=now() - timedelta(seconds=1)))
    assert client_for(app, token).get("/api/me").status_code == 401


def test_a_bad_bearer_is_not_rescued_by_a_cookie(archive: Archive, browser: TestClient) -> None:
    login(browser, "rad", create_user(archive, "rad", "radiologist"))
    assert browser.get("/api/me").status_code == 200
    bad = browser.get("/api/me", headers={"Authorization": "Bearer noctis_forged"})
    assert bad.status_code == 401


def test_disabled_user_loses_sessions_and_tokens(archive: Archive, app: FastAPI) -> None:
    browser = TestClient(app)
    login(browser, "rad", create_user(archive, "rad", "radiologist"))
    robot = client_for(app, token_for(archive, "rad"))
    with archive.sessions.begin() as session:
        session.execute(update(User).values(enabled=False))
    assert browser.get("/api/me").status_code == 401
    assert robot.get("/api/me").status_code == 401


def test_idle_session_expires(archive: Archive, browser: TestClient) -> None:
    login(browser, "rad", create_user(archive, "rad", "radiologist"))
    with archive.sessions.begin() as session:
        session.execute(update(WebSession).values(last_seen_at=now() - timedelta(hours=3)))
    assert browser.get("/api/me").status_code == 401


def test_first_admin_is_created_once_with_a_random_password(
    archive: Archive, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOCTIS_ADMIN_PASSWORD", raising=False)
    username, password = ensure_first_admin(archive)
    assert username == "admin" and password and len(password) >= 16
    assert ensure_first_admin(archive) == ("admin", None)
    browser = TestClient(app)
    login(browser, "admin", password)
    assert browser.get("/api/me").json()["facilities"] is None  # administrators see all


def test_first_admin_password_from_the_environment(
    archive: Archive, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOCTIS_ADMIN_PASSWORD", "chosen-by-operator")
    assert ensure_first_admin(archive) == ("admin", None)  # never printed back
    login(TestClient(app), "admin", "chosen-by-operator")


def test_add_user_explains_what_is_wrong(archive: Archive) -> None:
    add_user(archive, "tech", "technologist", password="long-enough", facilities=["default"])
    with pytest.raises(AccountError, match="already exists"):
        add_user(archive, "tech", "technologist")
    with pytest.raises(AccountError, match="unknown role"):
        add_user(archive, "other", "janitor")
    with pytest.raises(AccountError, match="unknown facilities: nowhere"):
        add_user(archive, "other", "radiologist", facilities=["nowhere"])
    with pytest.raises(AccountError, match="at least 8"):
        add_user(archive, "other", "radiologist", password="short")
    assert len(add_user(archive, "other", "referring-physician")) >= 16


def test_grants_decide_which_facilities_a_user_sees(archive: Archive, app: FastAPI) -> None:
    with archive.sessions.begin() as session:
        apply_facility(session, "st-mary", FacilitySpec.model_validate({"displayName": "St Mary"}))
        apply_facility(session, "north", FacilitySpec.model_validate({"displayName": "North"}))
    create_user(archive, "mary-rad", "radiologist", facilities=["st-mary"])
    create_user(archive, "boss", "admin", facilities=[])
    mary = client_for(app, token_for(archive, "mary-rad"))
    boss = client_for(app, token_for(archive, "boss"))
    assert [f["name"] for f in mary.get("/api/facilities").json()] == ["st-mary"]
    assert mary.get("/api/facilities/north").status_code == 404
    assert [f["name"] for f in boss.get("/api/facilities").json()] == [
        "default",
        "north",
        "st-mary",
    ]
    # A disabled facility is no longer granted.
    from noctis.index.facilities import disable_facility

    with archive.sessions.begin() as session:
        disable_facility(session, "st-mary")
    assert mary.get("/api/me").json()["facilities"] == []


def test_reset_password_ends_sessions(archive: Archive, app: FastAPI) -> None:
    from noctis.api.auth import reset_password

    browser = TestClient(app)
    login(browser, "rad", create_user(archive, "rad", "radiologist"))
    new = reset_password(archive, "rad")
    assert browser.get("/api/me").status_code == 401
    login(TestClient(app), "rad", new)
    with pytest.raises(AccountError, match="no user named"):
        reset_password(archive, "nobody")
