"""Prometheus metrics of the SCP.

One set per process, built on first use (several test servers in one process share it).
With several SCP processes, `noctis scp` runs prometheus_client's multiprocess mode: each child
writes its samples to files under ``PROMETHEUS_MULTIPROC_DIR`` and the parent, the only process
serving ``/metrics``, adds them up. That variable must be set before a process first imports
prometheus_client, hence the imports inside functions here.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class ScpMetrics:
    associations_active: Any
    associations_total: Any
    associations_rejected: Any
    process_associations: Any
    requests: Any
    instances_stored: Any
    store_failures: Any
    bytes_stored: Any
    store_seconds: Any
    commitment_reports: Any


_metrics: ScpMetrics | None = None
_lock = threading.Lock()


def get_metrics() -> ScpMetrics:
    global _metrics
    if _metrics is None:
        # Associations start on threads of their own: registering twice would raise.
        with _lock:
            if _metrics is None:
                _metrics = _build()
    return _metrics


def _build() -> ScpMetrics:
    from prometheus_client import Counter, Gauge, Histogram

    return ScpMetrics(
        associations_active=Gauge(
            "noctis_scp_associations_active",
            "DICOM associations open right now",
            multiprocess_mode="livesum",
        ),
        associations_total=Counter("noctis_scp_associations", "DICOM associations accepted"),
        associations_rejected=Counter(
            "noctis_scp_associations_rejected",
            "DICOM associations rejected (A-ASSOCIATE-RJ)",
            ["reason"],
        ),
        # One sample per process (pid label in multiprocess mode): shows how associations
        # spread over the SCP processes.
        process_associations=Gauge(
            "noctis_scp_process_associations",
            "DICOM associations accepted by this process",
            multiprocess_mode="all",
        ),
        requests=Counter(
            "noctis_scp_requests",
            "DIMSE requests answered, by service and final status class",
            ["service", "result"],
        ),
        instances_stored=Counter(
            "noctis_scp_instances_stored",
            "instances accepted by C-STORE, by outcome (stored, duplicate, discarded, replaced)",
            ["outcome"],
        ),
        store_failures=Counter(
            "noctis_scp_store_failures",
            "C-STORE requests refused, by reason",
            ["reason"],
        ),
        bytes_stored=Counter("noctis_scp_stored_bytes", "bytes of instances newly stored"),
        store_seconds=Histogram(
            "noctis_scp_store_seconds",
            "time to store one instance (parse, object store, index)",
            buckets=_LATENCY_BUCKETS,
        ),
        commitment_reports=Counter(
            "noctis_scp_commitment_reports",
            "storage commitment results, by outcome (same-association, new-association, "
            "undelivered: the requester never answered, no-address: it has no host and port)",
            ["outcome"],
        ),
    )


def result_class(status: int) -> str:
    """success, warning, failure or cancel: a small label set for request counts."""
    if status == 0x0000:
        return "success"
    if status == 0xFE00:
        return "cancel"
    if status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF:
        return "warning"
    return "failure"


def exposition(multiprocess_dir: str | None = None) -> tuple[bytes, str]:
    """The metrics page: this process's samples, or every SCP process's in multiprocess mode."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    directory = multiprocess_dir or os.environ.get(MULTIPROC_ENV)
    if directory:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int, multiprocess_dir: str) -> None:
    """Drop a finished child's live gauges (its counters stay in the totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, multiprocess_dir)
