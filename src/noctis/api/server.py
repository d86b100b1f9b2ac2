"""`noctis api`: the web application under uvicorn."""

from __future__ import annotations

import logging
from typing import Any

import uvicorn

from noctis.api.app import create_app
from noctis.core import heap
from noctis.settings import Settings

log = logging.getLogger(__name__)


def uvicorn_config(app: Any, host: str, port: int, **options: Any) -> uvicorn.Config:
    """Uvicorn's settings for our app, wherever we start it. Its proxy-header handling is
    off: by default it believes X-Forwarded-For from any local peer, and the app applies
    NOCTIS_TRUSTED_PROXIES itself (`noctis.api.app.create_app`)."""
    return uvicorn.Config(app, host=host, port=port, proxy_headers=False, **options)


def run(settings: Settings) -> None:
    from noctis.api.auth.setup import ensure_configured_admin

    app = create_app(settings)
    admin = ensure_configured_admin(app.state.runtime)
    if admin is not None:
        log.info("administrator %r is there (password from NOCTIS_ADMIN_PASSWORD)", admin)
    heap.settle()
    config = uvicorn_config(
        app,
        settings.api_host,
        settings.api_port,
        log_level="info",
        access_log=False,  # /metrics counts requests; the audit trail records patient data
    )
    uvicorn.Server(config).run()
