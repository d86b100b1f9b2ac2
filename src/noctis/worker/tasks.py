"""The worker's task functions, by task name. Each takes the Runtime first, then keywords.

The same functions run under Celery (`noctis worker`) and on the in-process queue of
`noctis serve`. They accept (and ignore) keywords they do not know, so a sender may add some
before every worker is upgraded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from noctis.core.deletion import SWEEP_DELETIONS
from noctis.core.queue import (
    FORWARD_TO_DESTINATION,
    INSTANCE_STORED,
    ROUTE_STUDY,
    SERIES_METADATA,
    STUDY_STABLE,
)
from noctis.core.results import scan_results
from noctis.worker.arrival import ARRIVAL_SCAN
from noctis.worker.forward import forward_to_destination, route_study, routing_tick
from noctis.worker.notify import notifications_prune, notifications_tick
from noctis.worker.orders import ORDER_LINKING
from noctis.worker.periodic import PeriodicJob
from noctis.worker.reports import REPORT_DOCUMENTS
from noctis.worker.series_metadata import instance_stored, series_metadata
from noctis.worker.stable import STABLE_SWEEP, study_stable
from noctis.worker.sweep import CONSISTENCY_CHECK, DELETION_SWEEP, RETENTION, sweep_deletions

TASKS: dict[str, Callable[..., Any]] = {
    INSTANCE_STORED: instance_stored,
    SERIES_METADATA: series_metadata,
    STUDY_STABLE: study_stable,
    ROUTE_STUDY: route_study,
    FORWARD_TO_DESTINATION: forward_to_destination,
    SWEEP_DELETIONS: sweep_deletions,
}

# Jobs every worker process runs on a clock (noctis.worker.periodic), one line each.
PERIODIC_JOBS: tuple[PeriodicJob, ...] = (
    STABLE_SWEEP,
    PeriodicJob("routing", lambda settings: settings.route_scan_seconds, routing_tick),
    DELETION_SWEEP,
    CONSISTENCY_CHECK,
    RETENTION,
    PeriodicJob("notifications", lambda settings: settings.notify_tick_seconds, notifications_tick),
    PeriodicJob("notifications-prune", lambda s: s.notify_prune_seconds, notifications_prune),
    ARRIVAL_SCAN,
    PeriodicJob("results", lambda settings: settings.results_scan_seconds, scan_results),
    REPORT_DOCUMENTS,
    ORDER_LINKING,
)
