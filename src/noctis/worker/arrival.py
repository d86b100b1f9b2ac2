"""The worklist's arrival scan as a periodic job: every worker process gives new studies
their workflow row every ``NOCTIS_WORKFLOW_SCAN_SECONDS`` (`noctis.core.worklist.ArrivalScan`).

Each process keeps its own scan (its watermark), made on its first run for that runtime."""

from __future__ import annotations

import weakref

from noctis.core.runtime import Runtime
from noctis.core.worklist import ArrivalScan
from noctis.settings import Settings
from noctis.worker.periodic import PeriodicJob

# Runtime id -> its scan, forgotten when the runtime goes (a Runtime is not hashable).
_scans: dict[int, ArrivalScan] = {}


def scan_arrivals(runtime: Runtime) -> int:
    """Give the studies that arrived since the last pass their workflow row; how many."""
    scan = _scans.get(id(runtime))
    if scan is None:
        scan = _scans[id(runtime)] = ArrivalScan()
        weakref.finalize(runtime, _scans.pop, id(runtime), None)
    return scan.run(runtime)


def _interval(settings: Settings) -> float:
    return settings.workflow_scan_seconds


ARRIVAL_SCAN = PeriodicJob("worklist-arrivals", _interval, scan_arrivals)
