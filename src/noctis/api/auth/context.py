"""What the login routes and the REST API share, kept on ``app.state.noctis_auth``."""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request, Response
from itsdangerous import URLSafeTimedSerializer

from noctis.api.auth.authenticator import NoctisAuthenticator
from noctis.api.auth.oidc import OidcProvider
from noctis.api.auth.settings import AuthSettings
from noctis.archive import Archive
from noctis.settings import Settings


class LoginThrottle:
    """Refuses a (user name, client) pair for a while after repeated failed logins."""

    def __init__(self, max_failures: int, lockout_seconds: float) -> None:
        self._max = max_failures
        self._window = lockout_seconds
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], moment: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= moment - self._window:
            failures.popleft()
        return failures

    def locked(self, username: str, client: str) -> bool:
        with self._lock:
            return len(self._recent((username.lower(), client), time.monotonic())) >= self._max

    def failed(self, username: str, client: str) -> None:
        with self._lock:
            moment = time.monotonic()
            self._recent((username.lower(), client), moment).append(moment)
            if len(self._failures) > 10_000:  # forget the oldest offenders, bound memory
                for stale in list(self._failures)[:1000]:
                    del self._failures[stale]

    def succeeded(self, username: str, client: str) -> None:
        with self._lock:
            self._failures.pop((username.lower(), client), None)


@dataclass
class AuthContext:
    settings: Settings
    auth: AuthSettings
    archive: Archive
    authenticator: NoctisAuthenticator
    oidc: OidcProvider | None
    signer: URLSafeTimedSerializer
    throttle: LoginThrottle = field(default_factory=lambda: LoginThrottle(5, 300))

    def cookie_secure(self, request: Request) -> bool:
        if self.auth.cookie_secure == "auto":
            return request.url.scheme == "https"
        return self.auth.cookie_secure == "always"

    def set_session_cookie(self, request: Request, response: Response, value: str) -> None:
        response.set_cookie(
            self.auth.cookie_name,
            value,
            max_age=self.auth.session_lifetime_seconds,
            path="/",
            secure=self.cookie_secure(request),
            httponly=True,
            samesite="lax",
        )

    def clear_session_cookie(self, request: Request, response: Response) -> None:
        response.delete_cookie(
            self.auth.cookie_name,
            path="/",
            secure=self.cookie_secure(request),
            httponly=True,
            samesite="lax",
        )


def make_signer(settings: Settings) -> URLSafeTimedSerializer:
    """Signs the short-lived OIDC state cookie. Without NOCTIS_SECRET_KEY a random key is
    used: fine for one process; replicas behind a load balancer need the shared key."""
    key = settings.secret_key.get_secret_value() or secrets.token_urlsafe(32)
    return URLSafeTimedSerializer(key, salt="noctis-oidc-state")


def get_auth_context(request: Request) -> AuthContext:
    context: AuthContext = request.app.state.noctis_auth
    return context


AuthContextDep = Annotated[AuthContext, Depends(get_auth_context)]


def safe_next(value: str | None) -> str:
    """A local path to return to after login; anything else (other sites) becomes '/'."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    if any(c in value for c in "\r\n"):
        return "/"
    return value
