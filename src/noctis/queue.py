"""Task names and the queue that ingest and the API send them to.

Production sends tasks to Celery (Redis broker) by name; embedded mode runs the same task
functions in-process on a small thread pool. The functions themselves live in
``noctis.worker``, which registers them with the in-process queue when it starts, so domain
code never imports a process package.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "noctis"
INSTANCE_STORED = "noctis.instance_stored"
SERIES_METADATA = "noctis.series_metadata"
STUDY_STABLE = "noctis.study_stable"
FORWARD_STUDY = "noctis.forward_study"
EXPIRE_STUDIES = "noctis.expire_studies"


class TaskQueue(Protocol):
    def send(self, task: str, /, *, queue: str | None = None, **kwargs: Any) -> None:
        """Send a task; never raises into the caller's write path."""


class NullQueue:
    """Drops tasks: for tools and tests that only need the write path."""

    def send(self, task: str, /, *, queue: str | None = None, **kwargs: Any) -> None:
        return None


class InProcessQueue:
    """Runs registered task functions on a thread pool in this process."""

    def __init__(self, workers: int = 2) -> None:
        self._handlers: dict[str, Callable[..., Any]] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="noctis-task")

    def register(self, task: str, handler: Callable[..., Any]) -> None:
        self._handlers[task] = handler

    def send(self, task: str, /, *, queue: str | None = None, **kwargs: Any) -> None:
        handler = self._handlers.get(task)
        if handler is None:
            return
        self._pool.submit(self._run, task, handler, kwargs)

    @staticmethod
    def _run(task: str, handler: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        try:
            handler(**kwargs)
        except Exception:
            log.exception("task %s failed", task)

    def drain(self) -> None:
        """Wait for the tasks sent so far (tests, shutdown)."""
        self._pool.shutdown(wait=True)
        handlers = self._handlers
        self.__init__()  # type: ignore[misc]
        self._handlers = handlers


class CeleryQueue:
    """Sends tasks by name to a Celery broker."""

    def __init__(self, broker_url: str) -> None:
        from celery import Celery

        self._app = Celery("noctis", broker=broker_url)

    def send(self, task: str, /, *, queue: str | None = None, **kwargs: Any) -> None:
        try:
            self._app.send_task(task, kwargs=kwargs, queue=queue or DEFAULT_QUEUE)
        except Exception:
            # A broker outage must not fail a store that is already durable.
            log.exception("could not queue task %s", task)
