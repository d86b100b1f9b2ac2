"""`app.state.authenticator`: who a request is, from its bearer token or session cookie."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker

from noctis.api.auth.credentials import (
    TOKEN_PREFIX,
    find_session,
    find_token,
    is_stale,
    touch_session,
    touch_token,
)
from noctis.api.auth.oidc import OidcError, OidcProvider
from noctis.api.auth.settings import AuthSettings
from noctis.api.security import Principal

log = logging.getLogger(__name__)

_CACHE_ATTR = "noctis_principal"
_ANONYMOUS = object()


class NoctisAuthenticator:
    """Bearer API tokens (``noctis_...``), bearer JWTs (when OIDC is configured), and the
    session cookie the login page sets. A request that presents a bearer credential is
    judged by it alone: a bad token is never rescued by a cookie."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: AuthSettings,
        oidc: OidcProvider | None = None,
        reader: sessionmaker[Session] | None = None,
    ) -> None:
        self._sessions = sessions
        # Every request is authenticated: look up in a read-only transaction (no write lock
        # on SQLite) and open a write transaction only for the occasional last-use update.
        self._read_engine = (reader or sessions).kw["bind"]
        self._settings = settings
        self._oidc = oidc
        self._idle = timedelta(seconds=settings.session_idle_seconds)

    def authenticate(self, request: Request) -> Principal | None:
        cached = getattr(request.state, _CACHE_ATTR, None)
        if cached is not None:
            return None if cached is _ANONYMOUS else cached  # type: ignore[no-any-return]
        principal = self._authenticate(request)
        setattr(request.state, _CACHE_ATTR, principal or _ANONYMOUS)
        return principal

    def _authenticate(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization")
        if header:
            scheme, _, credential = header.partition(" ")
            if scheme.lower() != "bearer" or not credential.strip():
                return None
            return self.from_bearer(credential.strip())
        cookie = request.cookies.get(self._settings.cookie_name)
        return self.from_session_cookie(cookie) if cookie else None

    def from_bearer(self, credential: str) -> Principal | None:
        if credential.startswith(TOKEN_PREFIX):
            with self._read_engine.connect() as conn:
                token = find_token(conn, credential)
                conn.rollback()  # a read-only transaction: nothing to keep
            if token is None:
                return None
            if is_stale(token):
                with self._sessions.begin() as session:
                    touch_token(session, token.id)
            return token.principal
        if self._oidc is None or credential.count(".") != 2:
            return None
        try:
            claims = self._oidc.verify_bearer(credential)
        except OidcError as exc:
            log.info("bearer JWT refused: %s", exc)
            return None
        with self._sessions() as session:
            return self._oidc.principal_for_claims(session, claims)

    def from_session_cookie(self, cookie: str) -> Principal | None:
        with self._read_engine.connect() as conn:
            row = find_session(conn, cookie, idle_timeout=self._idle)
            conn.rollback()
        if row is None:
            return None
        if is_stale(row):
            with self._sessions.begin() as session:
                touch_session(session, row.id)
        return row.principal
