"""OpenID Connect against a small issuer run here on 127.0.0.1: bearer JWTs checked against
its JWKS, and the authorization-code login with PKCE through the browser redirects."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from noctis.api.auth.settings import AuthSettings
from noctis.core.facilities import apply_facility
from noctis.core.runtime import Runtime
from noctis.index.accounts import User
from noctis.specs.facility import FacilitySpec
from support.archive import embedded_settings, open_runtime
from support.web import auth_app, client_for, create_user, running

CLIENT_ID = "noctis-web"
CLIENT_SECRET = "s3cret-of-the-client"


class Issuer:
    """A minimal OpenID provider: discovery, JWKS, authorize (auto-approves `self.user`),
    token (checks the client secret, redirect URI and PKCE verifier)."""

    def __init__(self) -> None:
        self.url = ""  # its base URL, once served
        self.keys: dict[str, rsa.RSAPrivateKey] = {"k1": _rsa()}
        self.signing_kid = "k1"
        self.user: dict[str, Any] = {}
        self.codes: dict[str, dict[str, str]] = {}
        self.jwks_fetches = 0
        self.app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.discovery),
                Route("/jwks", self.jwks),
                Route("/authorize", self.authorize),
                Route("/token", self.token_endpoint, methods=["POST"]),
            ]
        )

    def token(self, kid: str | None = None, **claims: Any) -> str:
        kid = kid or self.signing_kid
        moment = int(time.time())
        body = {"iss": self.url, "aud": CLIENT_ID, "iat": moment, "exp": moment + 300, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.keys[kid], algorithm="RS256", headers={"kid": kid})

    async def discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/jwks",
            }
        )

    async def jwks(self, request: Request) -> Response:
        self.jwks_fetches += 1
        keys = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return JSONResponse({"keys": keys})

    async def authorize(self, request: Request) -> Response:
        query = request.query_params
        assert query["response_type"] == "code" and query["client_id"] == CLIENT_ID
        assert query["code_challenge_method"] == "S256"
        code = secrets.token_urlsafe(16)
        self.codes[code] = dict(query)
        back = {"code": code, "state": query["state"]}
        return RedirectResponse(f"{query['redirect_uri']}?{urlencode(back)}", 302)

    async def token_endpoint(self, request: Request) -> Response:
        form = await request.form()
        basic = base64.b64decode(request.headers["authorization"].split()[1]).decode()
        if basic != f"{CLIENT_ID}:{CLIENT_SECRET}":
            return JSONResponse({"error": "invalid_client"}, 401)
        asked = self.codes.pop(str(form["code"]), None)
        if asked is None or asked["redirect_uri"] != form["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant"}, 400)
        digest = hashlib.sha256(str(form["code_verifier"]).encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != asked["code_challenge"]:
            return JSONResponse({"error": "invalid_grant", "error_description": "PKCE"}, 400)
        id_token = self.token(nonce=asked["nonce"], **self.user)
        return JSONResponse(
            {"id_token": id_token, "access_token": "opaque", "token_type": "Bearer"}
        )


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    issuer = Issuer()
    with running(issuer.app) as issuer.url:
        yield issuer


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    runtime = open_runtime(embedded_settings(tmp_path), default_facility=True)
    with runtime.sessions.begin() as session:
        spec = {"displayName": "St Mary", "identityProviderGroups": ["st-mary-radiology"]}
        apply_facility(session, "st-mary", FacilitySpec.model_validate(spec))
    yield runtime
    runtime.close()


@pytest.fixture
def app(runtime: Runtime, issuer: Issuer) -> FastAPI:
    issuer.user = {}
    settings = AuthSettings(
        oidc_issuer=issuer.url,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
        oidc_role_groups={
            "admin": ["pacs-admins"],
            "facility-admin": ["st-mary-pacs-admins"],
            "radiologist": ["st-mary-radiology"],
        },
    )
    return auth_app(runtime, settings)


def test_bearer_jwt_maps_groups_to_role_and_facilities(issuer: Issuer, app: FastAPI) -> None:
    token = issuer.token(sub="u-1", preferred_username="dr.who", groups=["st-mary-radiology"])
    me = client_for(app, token).get("/api/me")
    assert me.status_code == 200
    assert me.json() == {
        "username": "dr.who",
        "role": "radiologist",
        "method": "oidc",
        "facilities": ["st-mary"],
    }
    admin = issuer.token(sub="u-2", groups=["pacs-admins", "st-mary-radiology"])
    assert client_for(app, admin).get("/api/me").json()["facilities"] is None


def test_bearer_jwt_maps_a_group_to_the_facility_administrator_role(
    issuer: Issuer, app: FastAPI
) -> None:
    groups = ["st-mary-radiology", "st-mary-pacs-admins"]
    client = client_for(app, issuer.token(sub="u-3", preferred_username="fa", groups=groups))
    me = client.get("/api/me").json()
    assert (me["role"], me["facilities"]) == ("facility-admin", ["st-mary"])
    assert client.get("/api/users").status_code == 200  # its facility's users
    assert client.get("/api/tokens").status_code == 403  # tokens stay with administrators


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "someone-else"},
        {"iss": "http://127.0.0.1:1/other"},
        {"exp": int(time.time()) - 3600},
        {"groups": ["cafeteria"]},  # in no role group, and no default role
        {"sub": None},
    ],
    ids=["audience", "issuer", "expired", "no-role", "no-subject"],
)
def test_bearer_jwt_refused(issuer: Issuer, app: FastAPI, claims: dict[str, Any]) -> None:
    token = issuer.token(**{"sub": "u-1", "groups": ["st-mary-radiology"], **claims})
    assert client_for(app, token).get("/api/me").status_code == 401


def test_bearer_jwt_signed_by_another_key_is_refused(issuer: Issuer, app: FastAPI) -> None:
    forged = jwt.encode(
        {"iss": issuer.url, "aud": CLIENT_ID, "sub": "x", "exp": int(time.time()) + 60},
        _rsa(),
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    assert client_for(app, forged).get("/api/me").status_code == 401
    unsigned = jwt.encode({"iss": issuer.url, "aud": CLIENT_ID, "sub": "x"}, None, "none")
    assert client_for(app, unsigned).get("/api/me").status_code == 401


def test_key_rotation_refetches_the_jwks(issuer: Issuer, app: FastAPI) -> None:
    claims = {"sub": "u-1", "groups": ["pacs-admins"]}
    assert client_for(app, issuer.token(**claims)).get("/api/me").status_code == 200
    issuer.keys["k2"] = _rsa()
    app.state.noctis_auth.oidc.jwks_min_refresh = 0  # no waiting out the refetch interval
    fetches = issuer.jwks_fetches
    try:
        rotated = issuer.token(kid="k2", **claims)
        assert client_for(app, rotated).get("/api/me").status_code == 200
        assert issuer.jwks_fetches == fetches + 1
    finally:
        del issuer.keys["k2"]


def _code_flow(issuer: Issuer, browser: TestClient, next_url: str = "/viewer") -> httpx.Response:
    start = browser.get(f"/auth/oidc/login?next={next_url}", follow_redirects=False)
    assert start.status_code == 302
    assert start.headers["location"].startswith(f"{issuer.url}/authorize?")
    at_provider = httpx.get(start.headers["location"], follow_redirects=False)
    assert at_provider.status_code == 302
    back = urlsplit(at_provider.headers["location"])
    assert back.path == "/auth/oidc/callback"
    return browser.get(f"{back.path}?{back.query}", follow_redirects=False)


def test_code_flow_with_pkce_logs_the_browser_in(
    issuer: Issuer, app: FastAPI, runtime: Runtime
) -> None:
    issuer.user = {"sub": "u-7", "preferred_username": "jane", "groups": ["st-mary-radiology"]}
    browser = TestClient(app)
    assert "Sign in with single sign-on" in browser.get("/login").text
    done = _code_flow(issuer, browser)
    assert done.status_code == 303 and done.headers["location"] == "/viewer"
    assert "noctis_session=" in done.headers["set-cookie"]
    me = browser.get("/api/me").json()
    assert me == {
        "username": "jane",
        "role": "radiologist",
        "method": "oidc",
        "facilities": ["st-mary"],
    }
    with runtime.sessions() as session:
        user = session.scalars(select(User).where(User.username == "jane")).one()
    assert (user.source, user.password_hash) == ("oidc", None)


def test_code_flow_refuses_a_forged_state(issuer: Issuer, app: FastAPI) -> None:
    browser = TestClient(app)
    start = browser.get("/auth/oidc/login", follow_redirects=False)
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    response = browser.get(f"/auth/oidc/callback?code=x&state={state}x", follow_redirects=False)
    assert response.status_code == 401
    fresh = TestClient(app)  # no state cookie at all: the login was not started here
    assert fresh.get(f"/auth/oidc/callback?code=x&state={state}").status_code == 401


def test_code_flow_never_takes_over_a_local_account(
    issuer: Issuer, app: FastAPI, runtime: Runtime
) -> None:
    create_user(runtime, "jane", "referring-physician")
    issuer.user = {"sub": "u-7", "preferred_username": "jane", "groups": ["pacs-admins"]}
    browser = TestClient(app)
    done = _code_flow(issuer, browser)
    assert done.status_code == 401 and "local account" in done.text
    assert browser.get("/api/me").status_code == 401


def test_code_flow_refuses_users_in_no_role_group(issuer: Issuer, app: FastAPI) -> None:
    issuer.user = {"sub": "u-9", "preferred_username": "visitor", "groups": ["cafeteria"]}
    browser = TestClient(app)
    assert _code_flow(issuer, browser).status_code == 401
    assert browser.get("/api/me").status_code == 401
