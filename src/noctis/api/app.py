"""The web application: DICOMweb, health and metrics, plus auth and the viewer when present.

``create_app(settings)`` builds everything from settings; nothing is created at import time.
Given an ``archive`` it serves that one (tests, ``noctis serve``); otherwise it opens its own
and closes it on shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from noctis.api import health
from noctis.api.dicomweb import routers as dicomweb_routers
from noctis.api.dicomweb.cache import DicomWebCache
from noctis.core.runtime import Runtime
from noctis.settings import Settings
from noctis.storage import StorageUnavailable

log = logging.getLogger(__name__)


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    owned = runtime is None
    runtime = runtime or Runtime.open(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            runtime.close()

    app = FastAPI(
        title="Noctis",
        docs_url=None,  # /docs, /redoc and /openapi.json need a login: noctis.api.auth.docs
        redoc_url=None,
        openapi_url=None,
        summary="DICOMweb (QIDO-RS, WADO-RS, STOW-RS), REST and the OHIF viewer",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.dicomweb_cache = DicomWebCache(frame_budget=settings.frame_cache_mb << 20)
    app.state.metrics = health.Metrics()
    app.add_middleware(health.MetricsMiddleware, metrics=app.state.metrics)
    _unavailable_is_503(app)
    app.include_router(health.router)
    for router in dicomweb_routers():
        app.include_router(router)
    _install_auth_and_viewer(app, settings, runtime)
    # Outermost: every layer, the audit trail and the login rate limit included, sees the
    # real client. Uvicorn's own copy of this middleware is off wherever we start uvicorn
    # (`noctis.api.server.uvicorn_config`): its default trusts any local peer.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    return app


def _unavailable_is_503(app: FastAPI) -> None:
    """An index or object store outage is the archive's state, not a bug: 503, retry later."""

    async def storage_down(request: Request, exc: Exception) -> JSONResponse:
        log.error("object store unavailable: %s", exc)
        return JSONResponse({"detail": "the object store is unavailable"}, status_code=503)

    async def index_down(request: Request, exc: Exception) -> JSONResponse:
        log.error("index unavailable: %s", type(exc).__name__)
        return JSONResponse({"detail": "the index database is unavailable"}, status_code=503)

    app.add_exception_handler(StorageUnavailable, storage_down)
    app.add_exception_handler(OperationalError, index_down)
    app.add_exception_handler(InterfaceError, index_down)


def _install_auth_and_viewer(app: FastAPI, settings: Settings, runtime: Runtime) -> None:
    """Login, roles and audit; then the viewer, last: it serves ``/`` with an SPA fallback
    and must not shadow any route."""
    from noctis.api import auth, viewer
    from noctis.api.rest import visible
    from noctis.api.web import routes as web

    auth.install(app, settings, runtime)
    visible.install(app)
    web.install(app)
    viewer.mount(app, settings)
