"""Facility usage and quotas on /metrics.

- ``noctis_facility_used_bytes``, ``noctis_facility_studies``: what each facility stores, read
  from the index when /metrics is scraped (one grouped query, off the write path);
- ``noctis_facility_quota_bytes``, ``noctis_facility_quota_studies``: its quotas (absent when
  none);
- ``noctis_facility_quota_exceeded{quota}``: 1 while the facility is at or over that quota;
- ``noctis_quota_refusals_total{facility,quota}``: instances refused for a quota, counted by
  the process that refused them (the SCP's /metrics, the API's for STOW-RS).

prometheus_client is imported when first needed, never with this module: ingest imports it,
and `noctis scp` with several processes must set its multiprocess directory before the
client is imported (noctis.scp.metrics).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, func, select

from noctis.index.models import Facility, Study

REFUSALS = "noctis_quota_refusals"
_refusals: Any = None
_lock = threading.Lock()


def _refusal_counter() -> Any:
    global _refusals
    if _refusals is None:
        from prometheus_client import Counter

        with _lock:  # stores run on several threads: registering twice would raise
            if _refusals is None:
                _refusals = Counter(
                    REFUSALS,
                    "instances refused because their facility was at or over a quota",
                    ["facility", "quota"],
                )
    return _refusals


def refused(facility: str, quota: str) -> None:
    _refusal_counter().labels(facility=facility, quota=quota).inc()


def usage_text(reading: Callable[[], AbstractContextManager[Connection]]) -> bytes:
    """The usage gauges and the refusal counter in Prometheus' text format."""
    from prometheus_client import REGISTRY, CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()
    labels = ["facility"]
    used = Gauge("noctis_facility_used_bytes", "bytes a facility stores", labels, registry=registry)
    studies = Gauge(
        "noctis_facility_studies", "studies a facility stores", labels, registry=registry
    )
    max_bytes = Gauge(
        "noctis_facility_quota_bytes", "a facility's maxBytes quota", labels, registry=registry
    )
    max_studies = Gauge(
        "noctis_facility_quota_studies", "a facility's maxStudies quota", labels, registry=registry
    )
    exceeded = Gauge(
        "noctis_facility_quota_exceeded",
        "1 while a facility is at or over the quota",
        ["facility", "quota"],
        registry=registry,
    )
    usage = (
        select(
            Facility.name,
            Facility.quota_bytes,
            Facility.quota_studies,
            func.count(Study.id),
            func.coalesce(func.sum(Study.size_bytes), 0),
        )
        .outerjoin(Study, Study.facility_id == Facility.id)
        .group_by(Facility.id)
    )
    with reading() as conn:
        rows = conn.execute(usage).all()
    for name, quota_bytes, quota_studies, count, size in rows:
        used.labels(name).set(int(size))
        studies.labels(name).set(int(count))
        if quota_bytes is not None:
            max_bytes.labels(name).set(quota_bytes)
            exceeded.labels(name, "maxBytes").set(int(int(size) >= quota_bytes))
        if quota_studies is not None:
            max_studies.labels(name).set(quota_studies)
            exceeded.labels(name, "maxStudies").set(int(int(count) >= quota_studies))
    _refusal_counter()
    names = [f"{REFUSALS}_total", f"{REFUSALS}_created"]
    return generate_latest(registry) + generate_latest(REGISTRY.restricted_registry(names))
