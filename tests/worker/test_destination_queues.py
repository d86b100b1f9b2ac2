"""Transfers to a destination run on that destination's queue: a worker follows the queues of
destinations registered after it started, and a transfer worker takes nothing else."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from worker_support import celery_archive

from noctis.core.queue import DEFAULT_QUEUE, destination_queue, facility_queue
from noctis.settings import WorkerRole
from noctis.worker import queues
from noctis.worker.celery_app import create_celery
from noctis.worker.tasks import TASKS
from support import wait
from support.archive import embedded_settings, register_facility

PROBE = "noctis.test.probe"


def test_the_roles_name_the_registered_destinations(tmp_path: Path, broker: str) -> None:
    settings = embedded_settings(tmp_path / "data", broker_url=broker)
    runtime = celery_archive(settings)
    try:
        register_facility(
            runtime,
            "north",
            [
                {"aeTitle": "NORTH_CT"},  # calls us only: no destination
                {"aeTitle": "NORTH_PACS", "host": "127.0.0.1", "port": 11112},
            ],
        )
        north_pacs = destination_queue("NORTH_PACS")
        assert queues.followed_queues(runtime, WorkerRole.TRANSFERS) == [north_pacs]
        assert queues.followed_queues(runtime, WorkerRole.PIPELINE) == [
            DEFAULT_QUEUE,
            facility_queue("north"),
        ]
        assert queues.followed_queues(runtime, WorkerRole.ALL) == [
            DEFAULT_QUEUE,
            facility_queue("north"),
            north_pacs,
        ]
    finally:
        runtime.close()


def test_a_transfer_worker_follows_new_destinations_and_takes_nothing_else(
    tmp_path: Path, broker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = embedded_settings(tmp_path / "data", broker_url=broker)
    sender = celery_archive(settings)
    worker = celery_archive(settings)
    ran: list[dict[str, Any]] = []
    done = threading.Event()

    def probe(runtime: Any, **kwargs: Any) -> None:
        ran.append(kwargs)
        done.set()

    monkeypatch.setitem(TASKS, PROBE, probe)
    monkeypatch.setattr(queues, "REFRESH_SECONDS", 0.2)
    register_facility(sender, "north")
    app = create_celery(settings, worker, follow_facilities=True, role=WorkerRole.TRANSFERS)
    try:
        with start_worker(
            app,
            pool="threads",
            queues=queues.followed_queues(worker, WorkerRole.TRANSFERS),  # none registered yet
            perform_ping_check=False,
            loglevel="WARNING",
        ):
            # Derived work of a facility is not a transfer worker's.
            sender.queue.send(PROBE, queue=facility_queue("north"), what="derived")
            register_facility(
                sender, "north", [{"aeTitle": "LATE_PACS", "host": "127.0.0.1", "port": 11112}]
            )
            sender.queue.send(PROBE, queue=destination_queue("LATE_PACS"), what="transfer")
            wait.until(done.is_set, what="the transfer on the new destination's queue", timeout=20)
        assert ran == [{"what": "transfer"}]
        client = redis.Redis.from_url(broker)
        assert client.llen(facility_queue("north")) == 1  # still waiting for a pipeline worker
    finally:
        sender.close()
        worker.close()
