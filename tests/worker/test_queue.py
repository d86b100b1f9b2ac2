"""Task queues: delays in-process and through Celery, and the names the operator uses."""

from __future__ import annotations

import json
import threading
import time

import redis

from noctis.core.queue import (
    DEFAULT_QUEUE,
    DESTINATION_QUEUE_PREFIX,
    CeleryQueue,
    InProcessQueue,
    destination_queue,
    facility_queue,
)
from noctis.specs import archive as archive_spec


def test_in_process_delays_run_in_order_and_not_early() -> None:
    queue = InProcessQueue()
    ran: list[tuple[str, float]] = []
    done = threading.Event()

    def record(name: str) -> None:
        ran.append((name, time.monotonic()))
        if len(ran) == 3:
            done.set()

    queue.register("t", record)
    start = time.monotonic()
    queue.send("t", delay=0.4, name="late")
    queue.send("t", delay=0.2, name="soon")
    queue.send("t", name="now")
    assert done.wait(5)
    assert [name for name, _ in ran] == ["now", "soon", "late"]
    # Not early: a lower bound on the timer under test (a loaded machine only makes it later).
    assert ran[1][1] - start >= 0.2 and ran[2][1] - start >= 0.4
    queue.drain()


def test_in_process_drain_runs_delayed_tasks_and_what_they_send_now() -> None:
    queue = InProcessQueue()
    ran: list[str] = []
    queue.register("first", lambda: (ran.append("first"), queue.send("second", delay=60)))
    queue.register("second", lambda: ran.append("second"))
    queue.send("first", delay=3600)
    draining = threading.Thread(target=queue.drain)
    draining.start()
    draining.join(timeout=30)
    assert not draining.is_alive(), "drain waited for the tasks' delays"
    assert ran == ["first", "second"]
    queue.send("second")  # still usable after a drain
    queue.drain()
    assert ran == ["first", "second", "second"]


def test_celery_sends_to_the_named_queue_with_a_countdown(broker: str) -> None:
    before = time.time()
    CeleryQueue(broker).send("noctis.example", queue=facility_queue("north"), delay=30, x=1)
    CeleryQueue(broker).send("noctis.example", y=2)
    client = redis.Redis.from_url(broker)
    (delayed,) = client.lrange(facility_queue("north"), 0, -1)
    (plain,) = client.lrange(DEFAULT_QUEUE, 0, -1)
    headers = json.loads(delayed)["headers"]
    assert headers["task"] == "noctis.example"
    eta = headers["eta"]
    assert eta is not None and eta > time.strftime("%Y-%m-%dT%H:%M", time.gmtime(before + 29))
    assert json.loads(plain)["headers"]["eta"] is None


def test_queue_names_match_what_the_operator_gives_workers() -> None:
    assert DEFAULT_QUEUE == archive_spec.DEFAULT_QUEUE
    assert facility_queue("north") == archive_spec.facility_queue("north")
    assert destination_queue("PACS_2") == archive_spec.destination_queue("PACS_2")


def test_in_process_transfers_never_hold_the_threads_of_derived_work() -> None:
    queue = InProcessQueue(workers=1, transfer_workers=1)
    destination_down = threading.Event()
    derived_done = threading.Event()
    queue.register("send", lambda: destination_down.wait(30))  # a destination that hangs
    queue.register("derive", derived_done.set)
    assert destination_queue("SLOW").startswith(DESTINATION_QUEUE_PREFIX)
    queue.send("send", queue=destination_queue("SLOW"))
    queue.send("send", queue=destination_queue("SLOW"))  # waits behind the first transfer
    queue.send("derive", queue=facility_queue("north"))
    try:
        assert derived_done.wait(10), "derived work waited for a hung destination"
    finally:
        destination_down.set()
        queue.drain()
