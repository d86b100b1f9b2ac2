"""Task names and the queue that ingest and the API send them to.

Production sends tasks to Celery (Redis broker) by name; embedded mode runs the same task
functions in-process on a small thread pool. The functions themselves live in
``noctis.worker``, which registers them with the in-process queue when it starts, so domain
code never imports a process package.

Tasks about one facility's studies go to that facility's queue (``facility_queue``), so one
facility's backlog never delays another's; the rest go to ``DEFAULT_QUEUE``. ``delay`` runs a
task no earlier than that many seconds from now (a Celery countdown): debounced work such as
rebuilding a series' metadata bundle after its last instance arrived.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Protocol

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "noctis"
INSTANCE_STORED = "noctis.instance_stored"
SERIES_METADATA = "noctis.series_metadata"
# Sent once per study each time it becomes stable (no new instance for the facility's quiet
# time); its handler starts what waits for a whole study (derivatives, routing).
STUDY_STABLE = "noctis.study_stable"
# Route one study (or one instance) by the routing rules that match it.
ROUTE_STUDY = "noctis.route_study"


def facility_queue(facility: str) -> str:
    """The task queue of one facility (the operator names the same queues for the workers)."""
    return f"noctis.facility.{facility}"


def destination_queue(ae_title: str) -> str:
    """The queue of the transfers to one destination AE: a slow or unreachable destination
    only delays its own transfers (the operator names the same queues for the workers)."""
    return f"noctis.destination.{ae_title.strip()}"


class TaskQueue(Protocol):
    def send(
        self, task: str, /, *, queue: str | None = None, delay: float | None = None, **kwargs: Any
    ) -> None:
        """Send a task (run no earlier than ``delay`` seconds from now); never raises into
        the caller's write path."""


class NullQueue:
    """Drops tasks: for tools and tests that only need the write path."""

    def send(
        self, task: str, /, *, queue: str | None = None, delay: float | None = None, **kwargs: Any
    ) -> None:
        return None


_Job = tuple[str, Callable[..., Any], dict[str, Any], bool]  # (task, handler, kwargs, transfer)
DESTINATION_QUEUE_PREFIX = "noctis.destination."


class InProcessQueue:
    """Runs registered task functions on a thread pool in this process.

    Delayed tasks wait in a heap watched by one timer thread, started on first use. Tasks sent
    to a destination's queue run on a pool of their own (``transfer_workers`` threads), as the
    operator runs them on a Deployment of their own: a slow destination never holds the
    threads a facility's derived work needs.
    """

    def __init__(self, workers: int = 2, transfer_workers: int = 2) -> None:
        self._handlers: dict[str, Callable[..., Any]] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="noctis-task")
        self._transfer_pool = ThreadPoolExecutor(
            max_workers=transfer_workers, thread_name_prefix="noctis-transfer"
        )
        self._running: set[Future[None]] = set()
        self._delayed: list[tuple[float, int, _Job]] = []  # (due, order, job), a heap
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._timer: threading.Thread | None = None

    def register(self, task: str, handler: Callable[..., Any]) -> None:
        self._handlers[task] = handler

    def send(
        self, task: str, /, *, queue: str | None = None, delay: float | None = None, **kwargs: Any
    ) -> None:
        handler = self._handlers.get(task)
        if handler is None:
            return
        job = (task, handler, kwargs, (queue or "").startswith(DESTINATION_QUEUE_PREFIX))
        if delay is None or delay <= 0:
            self._submit(job)
            return
        with self._changed:
            due = time.monotonic() + delay
            heapq.heappush(self._delayed, (due, next(self._order), job))
            if self._timer is None:
                self._timer = threading.Thread(
                    target=self._release_due, name="noctis-task-timer", daemon=True
                )
                self._timer.start()
            self._changed.notify()

    def _submit(self, job: _Job) -> None:
        task, handler, kwargs, transfer = job
        pool = self._transfer_pool if transfer else self._pool
        future = pool.submit(self._run, task, handler, kwargs)
        with self._changed:
            self._running.add(future)
        future.add_done_callback(self._finished)

    def _finished(self, future: Future[None]) -> None:
        with self._changed:
            self._running.discard(future)

    def _release_due(self) -> None:
        while True:
            with self._changed:
                while not self._delayed or self._delayed[0][0] > time.monotonic():
                    timeout = self._delayed[0][0] - time.monotonic() if self._delayed else None
                    self._changed.wait(timeout)
                _, _, job = heapq.heappop(self._delayed)
                self._submit(job)  # under the lock: drain() never sees a job in between

    @staticmethod
    def _run(task: str, handler: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        try:
            handler(**kwargs)
        except Exception:
            log.exception("task %s failed", task)

    def drain(self) -> None:
        """Run every task sent so far -- delayed ones now, without waiting for their time --
        and the tasks they send, until none is left (tests, shutdown)."""
        while True:
            with self._changed:
                due = [job for _, _, job in sorted(self._delayed)]
                self._delayed.clear()
                running = set(self._running)
            for job in due:
                self._submit(job)
            with self._changed:
                running |= self._running
            if not running and not due:
                return
            wait(running)


class CeleryQueue:
    """Sends tasks by name to a Celery broker."""

    def __init__(self, broker_url: str) -> None:
        from celery import Celery

        self._app = Celery("noctis", broker=broker_url)

    def send(
        self, task: str, /, *, queue: str | None = None, delay: float | None = None, **kwargs: Any
    ) -> None:
        try:
            self._app.send_task(
                task, kwargs=kwargs, queue=queue or DEFAULT_QUEUE, countdown=delay or None
            )
        except Exception:
            # A broker outage must not fail a store that is already durable.
            log.exception("could not queue task %s", task)


# Send the due transfers of one destination (kwargs destination); on destination_queue(ae).
FORWARD_TO_DESTINATION = "noctis.forward"
