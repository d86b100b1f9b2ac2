"""Periodic jobs: the worker's work that runs on a clock, not on a message.

Study-stable detection, the deletion and consistency sweeps and retention each look at the
index every so often. Every worker process runs every job (``PeriodicRunner``, a thread of
its own, so a slow job never delays the consumer's heartbeat); a job claims each item it acts
on in the index (a conditional UPDATE, or ``SELECT ... FOR UPDATE SKIP LOCKED`` on
PostgreSQL), so several replicas running it at once act on each item once. Under Celery the
runner starts and stops with the consumer (``periodic_step``); ``noctis serve`` starts one
beside its in-process queue.

A job is a function of the runtime; its interval is read from the settings when the runner
starts. A job that raises is logged and tried again at its next tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from noctis.core.runtime import Runtime
from noctis.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    interval: Callable[[Settings], float]  # seconds between runs, from the settings
    run: Callable[[Runtime], Any]


class PeriodicRunner:
    """Runs each job every ``job.interval(settings)`` seconds on one thread, until stopped."""

    def __init__(self, runtime: Runtime, jobs: Sequence[PeriodicJob]) -> None:
        self._runtime = runtime
        self._jobs = list(jobs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PeriodicRunner:
        if self._jobs and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="noctis-periodic", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        intervals = [max(0.05, job.interval(self._runtime.settings)) for job in self._jobs]
        due = [time.monotonic() + interval for interval in intervals]
        while not self._stop.is_set():
            now = time.monotonic()
            for index, job in enumerate(self._jobs):
                if due[index] > now:
                    continue
                self.run_once(job)
                due[index] = time.monotonic() + intervals[index]
                if self._stop.is_set():
                    return
            self._stop.wait(max(0.0, min(due) - time.monotonic()))

    def run_once(self, job: PeriodicJob) -> None:
        try:
            job.run(self._runtime)
        except Exception:
            log.exception("periodic job %s failed; trying again at its next tick", job.name)


def periodic_step(runtime: Runtime, jobs: Sequence[PeriodicJob]) -> type[Any]:
    """A Celery consumer bootstep running ``jobs`` while the consumer runs."""

    from celery import bootsteps  # a Celery worker's: `noctis serve` runs without Celery

    class Periodic(bootsteps.StartStopStep):
        requires = {"celery.worker.consumer.tasks:Tasks"}

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.runner: PeriodicRunner | None = None

        def start(self, parent: Any) -> None:
            self.runner = PeriodicRunner(runtime, jobs).start()

        def stop(self, parent: Any) -> None:
            if self.runner is not None:
                self.runner.stop()
                self.runner = None

        shutdown = stop

    return Periodic
