"""Queue depth as the operator reads it from a real Redis broker, and the scaling rule."""

from __future__ import annotations

import pytest
import redis
from celery import Celery
from prometheus_client import generate_latest

from noctis.core.queue import CeleryQueue
from noctis.operator.metrics import OperatorMetrics
from noctis.operator.queue_depth import read_depths
from noctis.operator.scaling import decide
from noctis.specs.archive import AutoscaleSpec
from support.redis import RedisServer

BOUNDS = AutoscaleSpec(minReplicas=1, maxReplicas=4, tasksPerReplica=5, coolDownSeconds=60)


@pytest.fixture
def broker(redis_server: RedisServer) -> str:
    redis_server.up()
    redis.Redis.from_url(redis_server.url).flushdb()
    return redis_server.url


def test_depth_counts_every_priority_and_the_unacknowledged(broker: str) -> None:
    sender = CeleryQueue(broker)
    for n in range(3):
        sender.send("noctis.example", queue="noctis.facility.north", n=n)
    app = Celery("sender", broker=broker)
    app.send_task("noctis.example", queue="noctis.facility.north", priority=9)
    sender.send("noctis.example", queue="noctis.destination.PACS2")

    # A worker takes one message (delivered, not acknowledged: acks_late).
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue("noctis.destination.PACS2", no_ack=False)
        taken = queue.get(timeout=5)
        names = ["noctis", "noctis.facility.north", "noctis.destination.PACS2"]
        depths = read_depths(broker, names)
        assert depths.queued == {
            "noctis": 0,
            "noctis.facility.north": 4,
            "noctis.destination.PACS2": 0,
        }
        assert depths.unacked == {"noctis.destination.PACS2": 1}
        assert depths.total(["noctis.facility.north", "noctis.destination.PACS2"]) == (4, 1)
        taken.ack()
        queue.close()
    assert read_depths(broker, ["noctis.destination.PACS2"]).unacked == {}


def test_depth_of_an_unreachable_broker_is_an_error() -> None:
    with pytest.raises(redis.RedisError):
        read_depths("redis://127.0.0.1:1/0", ["noctis"])


def test_replicas_go_up_at_once_within_bounds() -> None:
    assert decide(BOUNDS, 0, 1, None, 1000.0).replicas == 1
    assert decide(BOUNDS, 11, 1, None, 1000.0).replicas == 3  # ceil(11 / 5)
    assert decide(BOUNDS, 500, 3, 900.0, 1000.0).replicas == 4  # capped
    assert decide(BOUNDS, 0, 0, None, 1000.0).replicas == 1  # never below the minimum


def test_replicas_go_down_only_after_the_cool_down() -> None:
    busy = decide(BOUNDS, 20, 2, None, 1000.0)
    assert (busy.replicas, busy.last_busy) == (4, 1000.0)
    waiting = decide(BOUNDS, 0, 4, busy.last_busy, 1059.0)
    assert (waiting.wanted, waiting.replicas, waiting.last_busy) == (1, 4, 1000.0)
    # A burst inside the cool-down starts it again.
    again = decide(BOUNDS, 20, 4, waiting.last_busy, 1059.5)
    assert (again.replicas, again.last_busy) == (4, 1059.5)
    down = decide(BOUNDS, 0, 4, again.last_busy, 1120.0)
    assert down.replicas == 1


def test_metrics_forget_the_queues_of_removed_facilities() -> None:
    metrics = OperatorMetrics.create()
    metrics.report_queues("pacs", "noctis", {"noctis.facility.north": (3, 1), "noctis": (0, 0)})
    metrics.report_queues("pacs", "noctis", {"noctis": (2, 0)})
    text = generate_latest(metrics.registry).decode()
    assert "noctis.facility.north" not in text
    assert 'noctis_queue_depth{archive="noctis",namespace="pacs",queue="noctis"} 2.0' in text
