"""Login page, sessions, API tokens, first administrator, facility grants."""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import delete, inspect, select, update

from noctis.api.app import create_app
from noctis.api.auth.credentials import now
from noctis.api.auth.settings import AuthSettings
from noctis.api.auth.setup import configured_admin_password, ensure_configured_admin
from noctis.core.accounts import AccountError, add_user, ensure_first_admin
from noctis.core.facilities import apply_facility
from noctis.core.runtime import Runtime
from noctis.index.accounts import ApiToken, AuditRow, LoginLockout, User, WebSession
from noctis.index.migrate import alembic_config, current_revision, upgrade
from noctis.settings import Settings
from noctis.specs.facility import FacilitySpec
from support.archive import embedded_settings, open_runtime
from support.web import auth_app, client_for, create_user, login, running, token_for


@pytest.fixture
def runtime(accounts_archive: Runtime) -> Runtime:
    return accounts_archive


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    return auth_app(runtime)


@pytest.fixture
def browser(app: FastAPI) -> TestClient:
    return TestClient(app)


def test_migrations_down_to_0001_and_up_again(runtime: Runtime) -> None:
    """The accounts tables (0002), the PostgreSQL write function (0003), the patient identity
    (0004) and the shared login lockout (0005) come and go with their migrations."""
    from alembic import command
    from alembic.script import ScriptDirectory

    url = runtime.settings.resolved_database_url()
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert current_revision(url) == head
    assert "login_lockout" in inspect(runtime.engine).get_table_names()
    runtime.engine.dispose()
    command.downgrade(alembic_config(url), "0001")
    assert current_revision(url) == "0001"
    assert "login_lockout" not in inspect(runtime.engine).get_table_names()
    runtime.engine.dispose()
    upgrade(url)
    assert current_revision(url) == head


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
    runtime: Runtime, browser: TestClient
) -> None:
    password = create_user(runtime, "rad", "radiologist")
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
    assert browser.get("/logout", follow_redirects=False).status_code == 405  # POST only
    assert browser.get("/api/me").status_code == 200
    assert browser.post("/logout", follow_redirects=False).status_code == 303
    assert browser.get("/api/me").status_code == 401
    with runtime.sessions() as session:
        assert session.scalar(select(WebSession)) is None
        actions = session.scalars(select(AuditRow.action).order_by(AuditRow.id)).all()
    assert actions == ["login", "logout"]


def test_cookie_is_secure_over_https(runtime: Runtime, app: FastAPI) -> None:
    password = create_user(runtime, "rad", "radiologist")
    client = TestClient(app, base_url="https://noctis.example")
    response = client.post(
        "/login", data={"username": "rad", "password": password}, follow_redirects=False
    )
    assert "secure" in response.headers["set-cookie"].lower()


def test_cookie_secure_can_be_forced(runtime: Runtime) -> None:
    password = create_user(runtime, "rad", "radiologist")
    client = TestClient(auth_app(runtime, AuthSettings(cookie_secure="always")))
    response = client.post(
        "/login", data={"username": "rad", "password": password}, follow_redirects=False
    )
    assert "secure" in response.headers["set-cookie"].lower()


def test_wrong_password_is_refused_and_audited(runtime: Runtime, browser: TestClient) -> None:
    create_user(runtime, "rad", "radiologist")
    response = browser.post("/login", data={"username": "rad", "password": "nope-nope"})
    assert response.status_code == 401
    assert "Wrong user name or password" in response.text
    assert "noctis_session" not in response.headers.get("set-cookie", "")
    with runtime.sessions() as session:
        event = session.scalars(select(AuditRow)).one()
    assert (event.actor, event.action, event.outcome) == ("rad", "login", "denied")
    assert event.detail == {"reason": "bad-credentials"}


def test_repeated_failures_lock_the_account_out_for_that_client(
    runtime: Runtime, browser: TestClient
) -> None:
    password = create_user(runtime, "rad", "radiologist")
    for _ in range(5):
        assert (
            browser.post("/login", data={"username": "rad", "password": "x" * 9}).status_code == 401
        )
    locked = browser.post("/login", data={"username": "rad", "password": password})
    assert locked.status_code == 429


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil"])
def test_login_never_redirects_off_site(runtime: Runtime, browser: TestClient, target: str) -> None:
    password = create_user(runtime, "rad", "radiologist")
    response = browser.post(
        "/login",
        data={"username": "rad", "password": password, "next": target},
        follow_redirects=False,
    )
    assert response.headers["location"] == "/"


def test_secrets_are_stored_as_hashes(runtime: Runtime) -> None:
    password = create_user(runtime, "rad", "radiologist")
    token = token_for(runtime, "rad")
    with runtime.sessions() as session:
        user = session.scalars(select(User)).one()
        stored = session.scalars(select(ApiToken)).one()
    assert user.password_hash is not None and user.password_hash.startswith("$argon2id$")
    assert password not in user.password_hash
    assert token not in stored.token_hash and len(stored.token_hash) == 64
    assert token.startswith(stored.prefix)


def test_api_token_acts_as_its_user_until_revoked(runtime: Runtime, app: FastAPI) -> None:
    create_user(runtime, "robot", "technologist")
    token = token_for(runtime, "robot")
    client = client_for(app, token)
    assert client.get("/api/me").json()["method"] == "token"
    with runtime.sessions.begin() as session:
        session.execute(update(ApiToken).values(revoked_at=now()))
    assert client.get("/api/me").status_code == 401


def test_expired_token_is_refused(runtime: Runtime, app: FastAPI) -> None:
    create_user(runtime, "robot", "technologist")
    token = token_for(runtime, "robot")
    with runtime.sessions.begin() as session:
        session.execute(update(ApiToken).values(expires_at=now() - timedelta(seconds=1)))
    assert client_for(app, token).get("/api/me").status_code == 401


def test_a_bad_bearer_is_not_rescued_by_a_cookie(runtime: Runtime, browser: TestClient) -> None:
    login(browser, "rad", create_user(runtime, "rad", "radiologist"))
    assert browser.get("/api/me").status_code == 200
    bad = browser.get("/api/me", headers={"Authorization": "Bearer noctis_forged"})
    assert bad.status_code == 401


def test_disabled_user_loses_sessions_and_tokens(runtime: Runtime, app: FastAPI) -> None:
    browser = TestClient(app)
    login(browser, "rad", create_user(runtime, "rad", "radiologist"))
    robot = client_for(app, token_for(runtime, "rad"))
    with runtime.sessions.begin() as session:
        session.execute(update(User).values(enabled=False))
    assert browser.get("/api/me").status_code == 401
    assert robot.get("/api/me").status_code == 401


def test_idle_session_expires(runtime: Runtime, browser: TestClient) -> None:
    login(browser, "rad", create_user(runtime, "rad", "radiologist"))
    with runtime.sessions.begin() as session:
        session.execute(update(WebSession).values(last_seen_at=now() - timedelta(hours=3)))
    assert browser.get("/api/me").status_code == 401


def test_first_admin_is_created_once_with_a_random_password(
    runtime: Runtime, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOCTIS_ADMIN_PASSWORD", raising=False)
    username, password = ensure_first_admin(runtime, configured_admin_password())
    assert username == "admin" and password and len(password) >= 16
    assert ensure_first_admin(runtime, configured_admin_password()) == ("admin", None)
    browser = TestClient(app)
    login(browser, "admin", password)
    assert browser.get("/api/me").json()["facilities"] is None  # administrators see all


def test_first_admin_password_from_the_environment(
    runtime: Runtime, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOCTIS_ADMIN_PASSWORD", "chosen-by-operator")
    # never printed back
    assert ensure_first_admin(runtime, configured_admin_password()) == ("admin", None)
    login(TestClient(app), "admin", "chosen-by-operator")


def test_production_api_creates_the_admin_only_with_a_configured_password(
    runtime: Runtime, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOCTIS_ADMIN_PASSWORD", raising=False)
    assert ensure_configured_admin(runtime) is None  # no random password printed in a log
    with runtime.sessions() as session:
        assert session.scalar(select(User).where(User.username == "admin")) is None
    monkeypatch.setenv("NOCTIS_ADMIN_PASSWORD", "from-the-secret")
    assert ensure_configured_admin(runtime) == "admin"
    login(TestClient(app), "admin", "from-the-secret")
    # Another replica starting later, or a changed Secret, leaves the account as it is.
    monkeypatch.setenv("NOCTIS_ADMIN_PASSWORD", "changed-later")
    assert ensure_configured_admin(runtime) == "admin"
    login(TestClient(app), "admin", "from-the-secret")


def test_add_user_explains_what_is_wrong(runtime: Runtime) -> None:
    add_user(runtime, "tech", "technologist", password="long-enough", facilities=["default"])
    with pytest.raises(AccountError, match="already exists"):
        add_user(runtime, "tech", "technologist")
    with pytest.raises(AccountError, match="unknown role"):
        add_user(runtime, "other", "janitor")
    with pytest.raises(AccountError, match="unknown facilities: nowhere"):
        add_user(runtime, "other", "radiologist", facilities=["nowhere"])
    with pytest.raises(AccountError, match="at least 8"):
        add_user(runtime, "other", "radiologist", password="short")
    assert len(add_user(runtime, "other", "referring-physician")) >= 16


def test_grants_decide_which_facilities_a_user_sees(runtime: Runtime, app: FastAPI) -> None:
    with runtime.sessions.begin() as session:
        apply_facility(session, "st-mary", FacilitySpec.model_validate({"displayName": "St Mary"}))
        apply_facility(session, "north", FacilitySpec.model_validate({"displayName": "North"}))
    create_user(runtime, "mary-rad", "radiologist", facilities=["st-mary"])
    create_user(runtime, "boss", "admin", facilities=[])
    mary = client_for(app, token_for(runtime, "mary-rad"))
    boss = client_for(app, token_for(runtime, "boss"))
    assert [f["name"] for f in mary.get("/api/facilities").json()] == ["st-mary"]
    assert mary.get("/api/facilities/north").status_code == 404
    assert [f["name"] for f in boss.get("/api/facilities").json()] == [
        "default",
        "north",
        "st-mary",
    ]
    # A disabled facility is no longer granted.
    from noctis.core.facilities import disable_facility

    with runtime.sessions.begin() as session:
        disable_facility(session, "st-mary")
    assert mary.get("/api/me").json()["facilities"] == []


def test_reset_password_ends_sessions(runtime: Runtime, app: FastAPI) -> None:
    from noctis.core.accounts import reset_password

    browser = TestClient(app)
    login(browser, "rad", create_user(runtime, "rad", "radiologist"))
    new = reset_password(runtime, "rad")
    assert browser.get("/api/me").status_code == 401
    login(TestClient(app), "rad", new)
    with pytest.raises(AccountError, match="no user named"):
        reset_password(runtime, "nobody")


# -- Over real HTTP: cross-site forms, lockout, login floods, forwarded addresses ----------


def _login_form(
    client: httpx.Client, username: str, password: str, **headers: str
) -> httpx.Response:
    return client.post(
        "/login",
        data={"username": username, "password": password, "next": "/"},
        headers=headers,
        follow_redirects=False,
    )


def test_cross_site_login_and_logout_forms_are_refused(runtime: Runtime, app: FastAPI) -> None:
    password = create_user(runtime, "rad", "radiologist")
    with running(app) as base, httpx.Client(base_url=base) as browser:
        for forged in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            refused = _login_form(browser, "rad", password, **forged)
            assert refused.status_code == 403 and "cross-origin" in refused.text
            assert "set-cookie" not in refused.headers
        same_site = _login_form(browser, "rad", password, **{"Sec-Fetch-Site": "same-site"})
        assert same_site.status_code == 403  # a sibling host is another origin
        signed_in = _login_form(
            browser, "rad", password, Origin=base, **{"Sec-Fetch-Site": "same-origin"}
        )
        assert signed_in.status_code == 303 and browser.get("/api/me").status_code == 200
        assert browser.get("/logout", follow_redirects=False).status_code == 405
        forged_logout = browser.post("/logout", headers={"Origin": "http://evil.example"})
        assert forged_logout.status_code == 403
        assert browser.get("/api/me").status_code == 200  # still signed in
        assert browser.post("/logout", headers={"Origin": base}).status_code == 303
        assert browser.get("/api/me").status_code == 401


def test_login_page_may_not_be_framed_or_run_scripts(app: FastAPI) -> None:
    with running(app) as base:
        page = httpx.get(f"{base}/login")
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
    assert "script-src" not in policy and "unsafe-inline" not in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"


def test_parallel_wrong_passwords_are_counted_atomically_and_shared(
    runtime: Runtime, tmp_path: Path
) -> None:
    """30 wrong passwords at once: only the allowed 5 are checked, the rest are refused as
    locked; a second app on the same database (another process's view) sees the lockout."""
    password = create_user(runtime, "rad", "radiologist")
    generous = AuthSettings(login_rate_burst=100)  # the address rate limit is not tested here
    url = runtime.settings.resolved_database_url()
    other = open_runtime(
        embedded_settings(tmp_path / "other-process", database_url=url), default_facility=True
    )
    try:
        with (
            running(auth_app(runtime, generous)) as first,
            running(auth_app(other, generous)) as second,
        ):

            def attempt(_: int) -> httpx.Response:
                with httpx.Client(base_url=first, timeout=60) as client:
                    return _login_form(client, "rad", "wrong-password")

            with ThreadPoolExecutor(30) as pool:
                answers = list(pool.map(attempt, range(30)))
            with httpx.Client(base_url=second) as client:
                locked = _login_form(client, "rad", password)
    finally:
        other.close()
    codes = Counter(a.status_code for a in answers)
    assert codes == {401: 5, 429: 25}, codes
    assert all("Too many failed attempts" in a.text for a in answers if a.status_code == 429)
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    with runtime.sessions() as session:
        reasons = Counter(e.detail["reason"] for e in session.scalars(select(AuditRow)) if e.detail)
    assert reasons == {"bad-credentials": 5, "locked-out": 26}


def test_a_login_flood_is_refused_before_hashing_and_qido_is_still_answered(
    runtime: Runtime,
) -> None:
    """40 logins at once with random user names (each would cost an argon2 hash) beside a
    signed-in user's QIDO requests: the flood gets 429 with Retry-After, QIDO is answered.
    How fast QIDO stays beside a flood is a figure of `bench/run.py load` (its flood phase)."""
    password = create_user(runtime, "rad", "radiologist")
    app = create_app(runtime.settings, runtime)
    with running(app) as base, httpx.Client(base_url=base, timeout=60) as reader:
        login(reader, "rad", password)
        assert reader.get("/dicom-web/studies").status_code in (200, 204)

        def flood(_: int) -> httpx.Response:
            with httpx.Client(base_url=base, timeout=60) as client:
                return _login_form(client, f"nobody-{uuid.uuid4().hex}", "guess-guess")

        with ThreadPoolExecutor(40) as pool:
            flooding = pool.map(flood, range(40))
            for _ in range(30):
                assert reader.get("/dicom-web/studies").status_code in (200, 204)
            answers = list(flooding)
    codes = Counter(a.status_code for a in answers)
    assert codes[429] >= 25 and set(codes) <= {401, 429}, codes
    assert all(int(a.headers["retry-after"]) >= 1 for a in answers if a.status_code == 429)


def test_logins_beyond_the_hashing_queue_are_told_to_come_back(runtime: Runtime) -> None:
    """One hashing slot and no queue: of ten simultaneous logins, those that find the slot
    taken get 503 with Retry-After instead of piling up."""
    settings = AuthSettings(login_rate_burst=100, login_hash_concurrency=1, login_hash_queue=0)
    with running(auth_app(runtime, settings)) as base:

        def attempt(n: int) -> httpx.Response:
            with httpx.Client(base_url=base, timeout=60) as client:
                return _login_form(client, f"someone-{n}", "guess-guess")

        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(attempt, range(10)))
    busy = [a for a in answers if a.status_code == 503]
    assert busy and {a.status_code for a in answers} == {401, 503}
    assert all(a.headers["retry-after"] == "1" and "busy" in a.text for a in busy)


def test_logins_turned_away_as_busy_do_not_count_towards_the_lockout(runtime: Runtime) -> None:
    """Ten wrong passwords at once against one hashing slot: those told to come back (503)
    were never checked, so only the checked ones (401) count. With ten failures allowed,
    the owner's right password afterwards still signs in."""
    password = create_user(runtime, "rad", "radiologist")
    settings = AuthSettings(
        login_rate_burst=100,
        login_hash_concurrency=1,
        login_hash_queue=0,
        login_max_failures=10,
    )
    with running(auth_app(runtime, settings)) as base:

        def attempt(_: int) -> httpx.Response:
            with httpx.Client(base_url=base, timeout=60) as client:
                return _login_form(client, "rad", "wrong-password")

        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(attempt, range(10)))
        codes = Counter(a.status_code for a in answers)
        assert codes[503] and set(codes) == {401, 503}, codes
        with runtime.sessions() as session:
            counted = session.scalars(select(LoginLockout.attempts)).one()
        assert counted == codes[401]
        with httpx.Client(base_url=base) as client:
            assert _login_form(client, "rad", password).status_code == 303


def test_an_unknown_user_name_costs_a_password_check_too(
    runtime: Runtime, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong user name is answered after the same argon2 verification as a wrong password,
    so the time of the answer does not tell which names exist."""
    create_user(runtime, "rad", "radiologist")
    verifications: list[str] = []
    verify = PasswordHasher.verify

    def counted(self: PasswordHasher, hash: str | bytes, password: str | bytes) -> bool:
        verifications.append(str(password))
        return verify(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", counted)

    def checks(username: str) -> int:
        verifications.clear()
        assert _login_form(client, username, "wrong-password").status_code == 401
        return verifications.count("wrong-password")

    with running(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        assert checks("rad") == 1
        assert checks("ghost") == 1


def test_forwarded_addresses_count_only_from_trusted_proxies(runtime: Runtime) -> None:
    create_user(runtime, "rad", "radiologist")

    def clients_seen(trusted: list[str], forwarded: list[str]) -> list[tuple[str, str]]:
        settings = runtime.settings.model_copy(update={"trusted_proxies": trusted})
        with running(create_app(settings, runtime)) as base, httpx.Client(base_url=base) as c:
            for address in forwarded:
                _login_form(c, "rad", "wrong-password", **{"X-Forwarded-For": address})
        with runtime.sessions.begin() as session:
            events = session.scalars(select(AuditRow).order_by(AuditRow.id))
            seen = [(e.client, (e.detail or {}).get("reason", "")) for e in events]
            session.execute(delete(AuditRow))
            session.execute(delete(LoginLockout))
        return seen

    # No proxy configured (the default): forged addresses are ignored, the lockout holds.
    forged = [f"10.9.8.{n}" for n in range(7)]
    assert (
        clients_seen([], forged)
        == [("127.0.0.1", "bad-credentials")] * 5 + [("127.0.0.1", "locked-out")] * 2
    )
    # Behind a trusted proxy: the right-most address it did not add itself.
    chain = ["6.6.6.6, 203.0.113.7"]
    assert clients_seen(["127.0.0.1"], chain) == [("203.0.113.7", "bad-credentials")]
    assert clients_seen(["127.0.0.0/8", "203.0.113.0/24"], chain) == [
        ("6.6.6.6", "bad-credentials")
    ]


@pytest.mark.parametrize(("trusted", "secure"), [([], False), (["127.0.0.1"], True)])
def test_https_behind_a_proxy_counts_only_from_a_trusted_one(
    runtime: Runtime, trusted: list[str], secure: bool
) -> None:
    """X-Forwarded-Proto from a trusted proxy makes the session cookie Secure (auto)."""
    password = create_user(runtime, "rad", "radiologist")
    settings = runtime.settings.model_copy(update={"trusted_proxies": trusted})
    with running(create_app(settings, runtime)) as base, httpx.Client(base_url=base) as client:
        answer = _login_form(client, "rad", password, **{"X-Forwarded-Proto": "https"})
    assert answer.status_code == 303
    assert ("secure" in answer.headers["set-cookie"].lower()) is secure


def test_trusted_proxies_are_read_from_the_environment_and_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOCTIS_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1")
    assert Settings().trusted_proxies == ["10.0.0.0/8", "192.168.1.1"]
    monkeypatch.setenv("NOCTIS_TRUSTED_PROXIES", "10.0.0.0/8,*")
    with pytest.raises(ValidationError, match="not an address or CIDR: '\\*'"):
        Settings()
    monkeypatch.delenv("NOCTIS_TRUSTED_PROXIES")
    assert Settings().trusted_proxies == []  # nobody's X-Forwarded-For counts by default
