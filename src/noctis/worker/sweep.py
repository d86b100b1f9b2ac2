"""The deletion sweep, the consistency check and retention, as a task and periodic jobs.

The domain work is in ``noctis.core.deletion`` and ``noctis.core.consistency``; this module
only binds it to the worker: the task kicked after each deletion, and the jobs every worker
process (and ``noctis serve``) runs on a clock.
"""

from __future__ import annotations

from typing import Any

from noctis.core.consistency import check_consistency
from noctis.core.deletion import sweep_tombstones
from noctis.core.retention import expire_studies
from noctis.core.runtime import Runtime
from noctis.worker.periodic import PeriodicJob


def sweep_deletions(runtime: Runtime, **_: Any) -> int:
    """Remove the objects of deleted studies, series and instances; the tombstones done."""
    return sweep_tombstones(runtime).removed


def _consistency(runtime: Runtime) -> None:
    check_consistency(runtime, scheduled=True)


DELETION_SWEEP = PeriodicJob(
    "deletion-sweep", lambda settings: settings.deletion_sweep_seconds, sweep_tombstones
)
CONSISTENCY_CHECK = PeriodicJob(
    "consistency-check", lambda settings: settings.consistency_check_seconds, _consistency
)


def _retention(runtime: Runtime) -> None:
    expire_studies(runtime, scheduled=True)


RETENTION = PeriodicJob("retention", lambda settings: settings.retention_check_seconds, _retention)
