"""What the login routes and the REST API share, kept on ``app.state.noctis_auth``."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response
from itsdangerous import URLSafeTimedSerializer

from noctis.api.auth.authenticator import NoctisAuthenticator
from noctis.api.auth.flood import AddressRateLimiter, HashingGate
from noctis.api.auth.oidc import OidcProvider
from noctis.api.auth.settings import AuthSettings
from noctis.core.runtime import Runtime
from noctis.settings import Settings


@dataclass
class AuthContext:
    settings: Settings
    auth: AuthSettings
    runtime: Runtime
    authenticator: NoctisAuthenticator
    oidc: OidcProvider | None
    signer: URLSafeTimedSerializer
    rate_limiter: AddressRateLimiter
    hashing: HashingGate

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
