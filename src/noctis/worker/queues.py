"""Which task queues a worker consumes.

By default: ``DEFAULT_QUEUE``, the queue of every enabled facility and of every destination
an enabled route sends to (``destination_queue``), read from the index
when the worker starts and again every REFRESH_SECONDS, so a facility registered later is
served without restarting the worker. ``NOCTIS_WORKER_QUEUES`` (comma-separated; the
operator sets it per Archive) names a fixed list instead.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from sqlalchemy import select

from noctis.core.queue import DEFAULT_QUEUE, destination_queue, facility_queue
from noctis.core.runtime import Runtime
from noctis.index.models import Facility
from noctis.index.routing import RouteRow
from noctis.settings import Settings

log = logging.getLogger(__name__)

REFRESH_SECONDS = 60.0


def facility_queues(runtime: Runtime) -> list[str]:
    """The default queue and every enabled facility's queue, from the index."""
    with runtime.sessions() as session:
        names = session.scalars(
            select(Facility.name).where(Facility.enabled.is_(True)).order_by(Facility.name)
        ).all()
        # Routing: the queue of every destination an enabled route sends to.
        destinations = {
            ae
            for aes in session.scalars(select(RouteRow.destinations).where(RouteRow.enabled))
            for ae in aes
        }
    return [
        DEFAULT_QUEUE,
        *(facility_queue(name) for name in names),
        *(destination_queue(ae) for ae in sorted(destinations)),
    ]


def configured_queues(settings: Settings) -> list[str]:
    """The queues NOCTIS_WORKER_QUEUES names, each once; empty when it is unset."""
    return list(dict.fromkeys(settings.worker_queues))


def follow_facilities_step(runtime: Runtime, interval: float | None = None) -> type[Any]:
    """A Celery consumer bootstep that starts consuming new facilities' queues."""

    class FollowFacilities(bootsteps.StartStopStep):
        requires = {"celery.worker.consumer.tasks:Tasks"}

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.tref: Any = None

        def start(self, parent: Any) -> None:
            every = interval or REFRESH_SECONDS
            self.tref = parent.timer.call_repeatedly(every, _refresh, (parent, runtime))

        def stop(self, parent: Any) -> None:
            if self.tref is not None:
                self.tref.cancel()
                self.tref = None

        shutdown = stop

    return FollowFacilities


def _refresh(consumer: Any, runtime: Runtime) -> None:
    try:
        queues = facility_queues(runtime)
    except Exception:
        log.warning("cannot read the facilities from the index; queues unchanged", exc_info=True)
        return
    for queue in queues:
        if not consumer.task_consumer.consuming_from(queue):
            # Bound like the queues Celery declares by name (exchange and routing key = name).
            consumer.add_task_queue(queue, exchange=queue, routing_key=queue)
