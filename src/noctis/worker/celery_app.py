"""The Celery application for `noctis worker`, built from settings (never at import time)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery

from noctis.core.queue import DEFAULT_QUEUE
from noctis.core.runtime import Runtime
from noctis.settings import Settings, WorkerRole
from noctis.worker.liveness import Heartbeat, heartbeat_step
from noctis.worker.periodic import PeriodicJob, periodic_step
from noctis.worker.queues import follow_facilities_step
from noctis.worker.tasks import TASKS


def create_celery(
    settings: Settings,
    runtime: Runtime,
    *,
    heartbeat: Heartbeat | None = None,
    follow_facilities: bool = False,
    periodic_jobs: Sequence[PeriodicJob] = (),
    role: WorkerRole = WorkerRole.ALL,
) -> Celery:
    """A Celery app whose tasks are the worker's task functions bound to ``archive``.

    ``heartbeat``: beaten from the consumer's event loop (liveness); ``follow_facilities``:
    start consuming the queue of every facility enabled (and destination registered, as
    ``role`` says) after the worker started;
    ``periodic_jobs``: run these (``noctis.worker.periodic``) while the consumer runs.
    """
    if not settings.broker_url:
        raise ValueError("NOCTIS_BROKER_URL is required to run a worker (e.g. redis://host:6379/0)")
    app = Celery("noctis", broker=settings.broker_url)
    app.conf.update(
        task_default_queue=DEFAULT_QUEUE,
        task_acks_late=True,  # a task lost with its worker is redelivered
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
    )
    for name, function in TASKS.items():
        # shared=False: Celery would otherwise add the task, bound to this archive, to every
        # Celery app finalized later in the process (tests, the queue's sending app).
        app.task(name=name, bind=False, shared=False)(_bound(function, runtime))
    if heartbeat is not None:
        app.steps["consumer"].add(heartbeat_step(heartbeat))
    if follow_facilities:
        app.steps["consumer"].add(follow_facilities_step(runtime, role=role))
    if periodic_jobs:
        app.steps["consumer"].add(periodic_step(runtime, periodic_jobs))
    return app


def _bound(function: Any, runtime: Runtime) -> Any:
    def task(**kwargs: Any) -> Any:
        return function(runtime, **kwargs)

    task.__name__ = function.__name__
    task.__doc__ = function.__doc__
    return task
