"""How many tasks wait on each queue of an Archive's broker (Redis, Celery's Redis transport).

kombu keeps one Redis list per queue and priority step (the queue's own name for priority 0,
``<queue>\\x06\\x16<step>`` for the others), and every message delivered to a worker but not
yet acknowledged in one hash (``unacked``: delivery tag -> [message, exchange, routing key]).
With ``task_acks_late`` that hash holds the tasks running, prefetched, or waiting for their
countdown, so queued + unacked is the work not done yet. Reading both is a handful of LLENs and
one HGETALL of at most the in-flight messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import redis

# kombu.transport.redis: Channel.sep, PRIORITY_STEPS, Channel.unacked_key.
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED_KEY = "unacked"
# Above this many unacknowledged messages, counting them per queue would read too much: the
# total is attributed to no queue (``QueueDepths.unattributed``).
MAX_UNACKED_READ = 10_000
TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class QueueDepths:
    queued: dict[str, int]  # queue -> messages waiting, all priorities
    unacked: dict[str, int]  # queue -> delivered, not yet acknowledged
    unattributed: int = 0  # unacknowledged messages not counted per queue

    def total(self, queues: Iterable[str]) -> tuple[int, int]:
        """(queued, unacked) over ``queues``."""
        names = list(queues)
        return (
            sum(self.queued.get(q, 0) for q in names),
            sum(self.unacked.get(q, 0) for q in names),
        )


def priority_lists(queue: str) -> list[str]:
    """The Redis lists that hold one queue's messages."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS]


def read_depths(broker_url: str, queues: Iterable[str]) -> QueueDepths:
    """The depth of each of ``queues`` on the broker; raises ``redis.RedisError`` if it cannot
    be read."""
    names = list(dict.fromkeys(queues))
    client = redis.Redis.from_url(
        broker_url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
    )
    try:
        pipe = client.pipeline(transaction=False)
        for queue in names:
            for key in priority_lists(queue):
                pipe.llen(key)
        pipe.hlen(UNACKED_KEY)
        counts = pipe.execute()
        in_flight = int(counts.pop())
        steps = len(PRIORITY_STEPS)
        queued = {q: sum(counts[i * steps : (i + 1) * steps]) for i, q in enumerate(names)}
        if in_flight > MAX_UNACKED_READ:
            return QueueDepths(queued, {}, unattributed=in_flight)
        unacked, unattributed = _unacked_by_queue(client.hvals(UNACKED_KEY), set(names))
        return QueueDepths(queued, unacked, unattributed)
    finally:
        client.close()


def _unacked_by_queue(values: list[bytes], wanted: set[str]) -> tuple[dict[str, int], int]:
    per_queue: dict[str, int] = {}
    unattributed = 0
    for value in values:
        try:
            _, exchange, routing_key = json.loads(value)
        except (ValueError, TypeError):
            unattributed += 1
            continue
        # Celery's queues are bound by name: exchange and routing key are the queue's name.
        queue = routing_key or exchange
        if queue in wanted:
            per_queue[queue] = per_queue.get(queue, 0) + 1
        else:
            unattributed += 1
    return per_queue, unattributed
