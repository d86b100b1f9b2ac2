"""Embedded mode: the worker's task functions run on the archive's in-process queue."""

from __future__ import annotations

import functools

from noctis.core.queue import InProcessQueue
from noctis.core.runtime import Runtime
from noctis.worker.periodic import PeriodicRunner
from noctis.worker.tasks import PERIODIC_JOBS, TASKS


def register_tasks(runtime: Runtime) -> None:
    """Bind every task function to ``archive`` and register it with its in-process queue."""
    if not isinstance(runtime.queue, InProcessQueue):
        raise TypeError("register_tasks needs an archive opened with an InProcessQueue")
    for name, function in TASKS.items():
        runtime.queue.register(name, functools.partial(function, runtime))


def start_periodic(runtime: Runtime) -> PeriodicRunner:
    """Run the worker's periodic jobs in this process (``noctis serve``); stop the runner
    before closing ``runtime``."""
    return PeriodicRunner(runtime, PERIODIC_JOBS).start()
