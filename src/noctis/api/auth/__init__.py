"""Login, roles and facility isolation for the web side.

`install(app, settings, archive)` puts the authenticator and the audit sink on `app.state`
(see `noctis.api.security`), and adds the login pages and the REST API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from noctis.api.auth.settings import AuthSettings
    from noctis.core.runtime import Runtime
    from noctis.settings import Settings

__all__ = ["install"]


def install(
    app: FastAPI,
    settings: Settings,
    runtime: Runtime,
    auth_settings: AuthSettings | None = None,
) -> None:
    """Authenticator and audit sink on app.state; login pages, OIDC callback, /api routes."""
    from noctis.api.auth.setup import install as install_auth

    install_auth(app, settings, runtime, auth_settings)
