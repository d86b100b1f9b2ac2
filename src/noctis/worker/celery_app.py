"""The Celery application for `noctis worker`, built from settings (never at import time)."""

from __future__ import annotations

from typing import Any

from celery import Celery

from noctis.archive import Archive
from noctis.queue import DEFAULT_QUEUE
from noctis.settings import Settings
from noctis.worker.tasks import TASKS


def create_celery(settings: Settings, archive: Archive) -> Celery:
    """A Celery app whose tasks are the worker's task functions bound to ``archive``."""
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
        app.task(name=name, bind=False)(_bound(function, archive))
    return app


def _bound(function: Any, archive: Archive) -> Any:
    def task(**kwargs: Any) -> Any:
        return function(archive, **kwargs)

    task.__name__ = function.__name__
    task.__doc__ = function.__doc__
    return task
