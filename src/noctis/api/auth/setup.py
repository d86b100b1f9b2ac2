"""Wiring of the auth package into an app (called through `noctis.api.auth.install`)."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from sqlalchemy.exc import IntegrityError

from noctis.api.auth import docs
from noctis.api.auth.authenticator import NoctisAuthenticator
from noctis.api.auth.context import AuthContext, make_signer
from noctis.api.auth.flood import AddressRateLimiter, HashingGate
from noctis.api.auth.guards import CrossOriginGuard, SecurityHeaders
from noctis.api.auth.oidc import OidcProvider
from noctis.api.auth.routes import router as login_router
from noctis.api.auth.settings import AuthSettings
from noctis.core.accounts import ensure_first_admin
from noctis.core.runtime import Runtime
from noctis.settings import Settings

log = logging.getLogger(__name__)


def install(
    app: FastAPI,
    settings: Settings,
    runtime: Runtime,
    auth_settings: AuthSettings | None = None,
) -> AuthContext:
    from noctis.api.rest import router as rest_router

    auth = auth_settings or AuthSettings()
    if auth.oidc_enabled and settings.mode == "production" and not settings.secret_key:
        raise ValueError("OIDC in production needs NOCTIS_SECRET_KEY (shared by all replicas)")
    oidc = OidcProvider(auth) if auth.oidc_enabled else None
    authenticator = NoctisAuthenticator(runtime.sessions, auth, oidc, reader=runtime.reader)
    context = AuthContext(
        settings=settings,
        auth=auth,
        runtime=runtime,
        authenticator=authenticator,
        oidc=oidc,
        signer=make_signer(settings),
        rate_limiter=AddressRateLimiter(auth.login_rate_burst, auth.login_rate_per_minute),
        hashing=HashingGate(auth.login_hash_concurrency, auth.login_hash_queue),
    )
    app.state.noctis_auth = context
    app.state.authenticator = authenticator
    app.state.audit = runtime.audit
    app.include_router(login_router)
    app.include_router(rest_router, prefix="/api")
    docs.install(app)
    # Outermost last: the guard refuses a cross-site POST before anything reads it.
    app.add_middleware(SecurityHeaders)
    app.add_middleware(CrossOriginGuard)
    if oidc is not None:
        log.info("single sign-on through %s", oidc.issuer)
    return context


def ensure_configured_admin(runtime: Runtime) -> str | None:
    """`noctis api`: create the administrator `admin` with NOCTIS_ADMIN_PASSWORD when that is
    set and the index has no user yet (on Kubernetes, the Archive's `api.adminPassword`).
    The name of the first administrator, or None when no password is configured (then
    nothing is created: `noctis user add` makes users). An existing account keeps its password.

    Several API replicas may start at once: one that loses the race to create the account
    finds it there.
    """
    configured = configured_admin_password()
    if configured is None:
        return None
    try:
        username, _ = ensure_first_admin(runtime, configured)
    except IntegrityError:
        username, _ = ensure_first_admin(runtime, configured)
    return username


def configured_admin_password() -> str | None:
    """NOCTIS_ADMIN_PASSWORD, or None when it is not set."""
    configured = AuthSettings().admin_password
    return configured.get_secret_value() if configured is not None else None
