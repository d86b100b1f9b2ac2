"""Liveness, readiness and Prometheus metrics: no authentication, no patient data.

``/healthz`` answers while the process serves requests; ``/readyz`` checks the index and the
object store (``Runtime.readiness``); ``/metrics`` counts requests and their latency per route
template (``/dicom-web/studies/{study}/series``), never per concrete URL, so UIDs never become
label values.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from noctis.core import (
    consistency,
    notify_delivery,
    quota_metrics,
    reconciliation,
    routing_status,
    stability,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The app's own registry, so several apps in one process (tests) do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "noctis_http_requests",
            "HTTP requests by method, route template and status code",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "noctis_http_request_duration_seconds",
            "Time to the end of the response, by method and route template",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): streaming responses pass through untouched."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = _route_template(scope)
            method = scope.get("method", "GET")
            self.metrics.requests.labels(method, route, str(status["code"])).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if path:
        return str(scope.get("root_path", "") or "") + str(path)
    return "unmatched"


@router.get("/healthz", include_in_schema=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False)
def readyz(request: Request) -> JSONResponse:
    report = request.app.state.runtime.readiness()
    ready = all(value == "ok" for value in report.values())
    return JSONResponse(report, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    # The write path's counters for reconciliation live in the process's default registry
    # (STOW-RS ingests here, C-STORE in the SCP, which serves that registry whole).
    body = generate_latest(registry) + reconciliation.metrics_text()
    body += stability.metrics_text()  # studies declared stable (embedded: this process)
    # Deletion backlog and consistency findings, read from the index (any replica answers alike).
    body += consistency.metrics_text(request.app.state.runtime)
    # Each facility's usage and quotas, from the index (noctis.core.quota_metrics).
    body += quota_metrics.usage_text(request.app.state.runtime.reading)
    try:  # routing progress, from the index: an index outage leaves the rest to scrape
        with request.app.state.runtime.reader() as session:
            body += routing_status.metrics_text(session)
            body += notify_delivery.metrics_text(session)  # notification deliveries by state
    except Exception:
        log.warning("routing metrics unavailable (index unreachable?)", exc_info=True)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
