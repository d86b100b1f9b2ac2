"""Periodic jobs run on their clock in both modes (a thread beside `noctis serve`'s queue, a
bootstep in `noctis worker`), and one job failing never stops the others."""

from __future__ import annotations

import threading
from pathlib import Path

from celery.contrib.testing.worker import start_worker
from worker_support import empty_broker

from noctis.core.runtime import Runtime
from noctis.worker.celery_app import create_celery
from noctis.worker.periodic import PeriodicJob, PeriodicRunner
from support import wait
from support.archive import embedded_settings, open_runtime
from support.redis import RedisServer


class Ticks:
    def __init__(self) -> None:
        self.count = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, runtime: Runtime) -> None:
        with self._lock:
            self.count += 1
            self.threads.add(threading.current_thread().name)


def _failing(runtime: Runtime) -> None:
    raise RuntimeError("this job always fails")


def test_runner_runs_each_job_repeatedly_and_survives_a_failing_one(tmp_path: Path) -> None:
    runtime = open_runtime(embedded_settings(tmp_path))
    ticks = Ticks()
    jobs = [
        PeriodicJob("fails", lambda settings: 0.05, _failing),
        PeriodicJob("ticks", lambda settings: 0.05, ticks),
    ]
    runner = PeriodicRunner(runtime, jobs).start()
    try:
        wait.until(lambda: ticks.count >= 5, what="five ticks despite the failing job", timeout=10)
    finally:
        runner.stop()
        runtime.close()
    stopped_at = ticks.count
    threading.Event().wait(0.3)
    assert ticks.count == stopped_at, "the job ran after the runner was stopped"
    assert ticks.threads == {"noctis-periodic"}


def test_celery_worker_runs_the_periodic_jobs_while_it_consumes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    broker = empty_broker(redis_server)
    settings = embedded_settings(tmp_path, broker_url=broker)
    runtime = open_runtime(settings)
    ticks = Ticks()
    app = create_celery(
        settings, runtime, periodic_jobs=[PeriodicJob("ticks", lambda s: 0.05, ticks)]
    )
    try:
        with start_worker(app, pool="threads", perform_ping_check=False, loglevel="WARNING"):
            wait.until(lambda: ticks.count >= 3, what="ticks under the Celery worker", timeout=20)
        stopped_at = ticks.count
        threading.Event().wait(0.3)
        assert ticks.count == stopped_at, "the job ran after the worker stopped"
    finally:
        runtime.close()
