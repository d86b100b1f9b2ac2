"""Users, tokens and HTTP clients for web tests (DICOMweb, REST, viewer).

    password = create_user(runtime, "rad", "radiologist", facilities=["default"])
    token = token_for(runtime, "rad")
    client = client_for(app, token)           # a TestClient sending `Authorization: Bearer`
    client = client_for("http://127.0.0.1:8080", token)   # an httpx.Client on a live server
    login(client, "rad", password)            # a browser-like session cookie via /login

`runtime` is a `noctis.core.runtime.Runtime` whose index is migrated (revision 0002 or later).
Facilities are given by name or id and must exist (e.g. `ensure_default_facility`).
Administrators see every facility whatever their grants.

`auth_app(runtime)` is a bare FastAPI app with only the auth package, REST API and viewer
installed (what the auth tests need without the DICOMweb routers). `with running(app) as
base_url:` serves an app under uvicorn on a loopback port, configured as `noctis api` runs
it (uvicorn's own proxy-header handling off).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from noctis.api import viewer
from noctis.api.auth import install
from noctis.api.auth.credentials import issue_token
from noctis.api.auth.settings import AuthSettings
from noctis.api.server import uvicorn_config
from noctis.core.accounts import add_user, require_user
from noctis.core.runtime import Runtime
from support import wait
from support.ports import LOOPBACK, free_port

TEST_PASSWORD_SUFFIX = "-pw-0123"


def create_user(
    runtime: Any,
    username: str,
    role: str = "radiologist",
    facilities: Iterable[str | int] = ("default",),
    *,
    password: str | None = None,
) -> str:
    """Create a local user granted `facilities`; its password."""
    return add_user(
        runtime,
        username,
        role,
        password=password or username + TEST_PASSWORD_SUFFIX,
        facilities=list(facilities),
    )


def token_for(runtime: Any, username: str, name: str = "test") -> str:
    """A new API token (the secret) acting as `username`."""
    with runtime.sessions.begin() as session:
        _, secret = issue_token(session, require_user(session, username), name)
    return secret


def client_for(app_or_base_url: FastAPI | str, token: str | None = None) -> httpx.Client:
    """An HTTP client for an app (in-process) or a live base URL, with the bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if isinstance(app_or_base_url, str):
        return httpx.Client(base_url=app_or_base_url, headers=headers, timeout=30.0)
    return TestClient(app_or_base_url, headers=headers)


def login(client: httpx.Client, username: str, password: str) -> httpx.Response:
    """Log in through the login form; the client keeps the session cookie."""
    response = client.post(
        "/login",
        data={"username": username, "password": password, "next": "/"},
        follow_redirects=False,
    )
    if response.status_code != 303:
        raise AssertionError(f"login as {username!r} failed: {response.status_code}")
    return response


def auth_app(runtime: Runtime, auth_settings: AuthSettings | None = None) -> FastAPI:
    """A FastAPI app with auth, REST and the viewer installed, nothing else."""
    app = FastAPI()
    install(app, runtime.settings, runtime, auth_settings or AuthSettings())
    viewer.mount(app, runtime.settings)
    return app


@contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """The app under uvicorn on a free loopback port, as `noctis api` runs it; its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, LOOPBACK, port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def started() -> bool:
        if not thread.is_alive():
            raise RuntimeError("uvicorn exited while starting (its error is in the output above)")
        return bool(server.started)

    wait.until(started, timeout=15, what=f"uvicorn on {LOOPBACK}:{port}", interval=0.02)
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
