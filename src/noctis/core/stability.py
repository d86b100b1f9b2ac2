"""The count of studies declared stable, on ``/metrics`` (worker and API processes).

``noctis_studies_stabilised_total{facility}`` counts the study versions this process declared
stable (``noctis.worker.stable``); summed over the worker processes it is the archive's.
prometheus_client is imported inside functions, as in ``noctis.core.reconciliation``.
"""

from __future__ import annotations

import threading
from typing import Any

_METRIC = "noctis_studies_stabilised"
_counter: Any = None
_lock = threading.Lock()


def _get_counter() -> Any:
    global _counter
    if _counter is None:
        with _lock:
            if _counter is None:
                from prometheus_client import Counter

                _counter = Counter(
                    _METRIC,
                    "study versions declared stable (no new instance for the quiet time)",
                    ["facility"],
                )
    return _counter


def count_stabilised(facility: str, studies: int = 1) -> None:
    _get_counter().labels(facility=facility).inc(studies)


def metrics_text() -> bytes:
    """This counter in Prometheus' text format."""
    from prometheus_client import REGISTRY, generate_latest

    _get_counter()
    return generate_latest(REGISTRY.restricted_registry([f"{_METRIC}_total", f"{_METRIC}_created"]))
