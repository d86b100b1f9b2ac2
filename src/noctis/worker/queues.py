"""Which task queues a worker consumes.

By default: ``DEFAULT_QUEUE``, the queue of every enabled facility and the queue of every
destination (a registered AE with a host and port: where routing may send), read from the
index when the worker starts and again every REFRESH_SECONDS, so a facility or destination
registered later is served without restarting the worker. ``NOCTIS_WORKER_ROLE`` narrows
that to the facilities' queues (``pipeline``) or the destinations' (``transfers``: the
operator's transfer Deployment). ``NOCTIS_WORKER_QUEUES`` (comma-separated; the operator
sets it on the pipeline Deployment) names a fixed list instead.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from sqlalchemy import select

from noctis.core.queue import DEFAULT_QUEUE, destination_queue, facility_queue
from noctis.core.runtime import Runtime
from noctis.index.models import ApplicationEntity, Facility
from noctis.settings import Settings, WorkerRole

log = logging.getLogger(__name__)

REFRESH_SECONDS = 60.0
# What a transfer worker consumes while no destination is registered (Celery needs a queue);
# nothing is sent here.
IDLE_TRANSFER_QUEUE = "noctis.transfers"


def facility_queues(runtime: Runtime) -> list[str]:
    """The default queue and every enabled facility's queue, from the index."""
    with runtime.sessions() as session:
        names = session.scalars(
            select(Facility.name).where(Facility.enabled.is_(True)).order_by(Facility.name)
        ).all()
    return [DEFAULT_QUEUE, *(facility_queue(name) for name in names)]


def destination_queues(runtime: Runtime) -> list[str]:
    """The queue of every registered AE that has a host and port, from the index."""
    with runtime.sessions() as session:
        titles = session.scalars(
            select(ApplicationEntity.ae_title)
            .where(ApplicationEntity.host.is_not(None), ApplicationEntity.host != "")
            .where(ApplicationEntity.port.is_not(None), ApplicationEntity.ae_title != "*")
            .order_by(ApplicationEntity.ae_title)
        ).all()
    return [destination_queue(title) for title in titles]


def followed_queues(runtime: Runtime, role: WorkerRole = WorkerRole.ALL) -> list[str]:
    """The queues a worker of ``role`` consumes now (never empty)."""
    if role is WorkerRole.TRANSFERS:
        return destination_queues(runtime) or [IDLE_TRANSFER_QUEUE]
    queues = facility_queues(runtime)
    if role is WorkerRole.ALL:
        queues += destination_queues(runtime)
    return queues


def configured_queues(settings: Settings) -> list[str]:
    """The queues NOCTIS_WORKER_QUEUES names, each once; empty when it is unset."""
    return list(dict.fromkeys(settings.worker_queues))


def follow_facilities_step(
    runtime: Runtime, interval: float | None = None, role: WorkerRole = WorkerRole.ALL
) -> type[Any]:
    """A Celery consumer bootstep that starts consuming new facilities' and destinations'
    queues (those of ``role``)."""

    class FollowFacilities(bootsteps.StartStopStep):
        requires = {"celery.worker.consumer.tasks:Tasks"}

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.tref: Any = None

        def start(self, parent: Any) -> None:
            every = interval or REFRESH_SECONDS
            self.tref = parent.timer.call_repeatedly(every, _refresh, (parent, runtime, role))

        def stop(self, parent: Any) -> None:
            if self.tref is not None:
                self.tref.cancel()
                self.tref = None

        shutdown = stop

    return FollowFacilities


def _refresh(consumer: Any, runtime: Runtime, role: WorkerRole) -> None:
    try:
        queues = followed_queues(runtime, role)
    except Exception:
        log.warning("cannot read the registry from the index; queues unchanged", exc_info=True)
        return
    for queue in queues:
        if not consumer.task_consumer.consuming_from(queue):
            # Bound like the queues Celery declares by name (exchange and routing key = name).
            consumer.add_task_queue(queue, exchange=queue, routing_key=queue)
