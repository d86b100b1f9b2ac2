"""Series notices (``noctis.core.notices``): a stored instance marks its series; the tasks hear of
each marked series once per beat, with its latest instance, and nothing pending is lost on
close. The queue here only records what it is sent: this is the notices' own logic."""

from __future__ import annotations

import threading
from typing import Any

from noctis.core.notices import SeriesNotices
from noctis.core.queue import INSTANCE_STORED, facility_queue
from support import wait


class RecordingQueue:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def send(
        self, task: str, /, *, queue: str | None = None, delay: float | None = None, **kwargs: Any
    ) -> None:
        with self._lock:
            self.sent.append((task, queue, kwargs))


def _series(sent: list[tuple[str, str | None, dict[str, Any]]]) -> list[tuple[str, str]]:
    return [(kw["series_instance_uid"], kw["sop_instance_uid"]) for _, _, kw in sent]


def test_many_instances_of_a_series_make_one_notice_with_the_latest() -> None:
    queue = RecordingQueue()
    notices = SeriesNotices(lambda: queue, interval=60)  # no beat during the test
    for number in range(300):
        notices.stored("north", "1.2.3", "1.2.3.4", f"1.2.3.4.{number}")
    notices.stored("south", "1.2.9", "1.2.9.1", "1.2.9.1.1")
    assert queue.sent == []  # nothing per instance
    notices.flush()
    assert sorted(_series(queue.sent)) == [("1.2.3.4", "1.2.3.4.299"), ("1.2.9.1", "1.2.9.1.1")]
    task, routed, kwargs = next(s for s in queue.sent if s[2]["facility"] == "north")
    assert task == INSTANCE_STORED and routed == facility_queue("north")
    assert kwargs["study_instance_uid"] == "1.2.3"
    notices.flush()
    assert len(queue.sent) == 2  # sent once, not again
    notices.close()


def test_the_beat_sends_without_being_asked() -> None:
    queue = RecordingQueue()
    notices = SeriesNotices(lambda: queue, interval=0.05)
    notices.stored("north", "1.2.3", "1.2.3.4", "1.2.3.4.1")
    wait.until(lambda: queue.sent, timeout=5, what="the beat to send", interval=0.01)
    assert _series(queue.sent) == [("1.2.3.4", "1.2.3.4.1")]
    notices.close()


def test_close_sends_what_is_pending_and_later_marks_go_at_once() -> None:
    queue = RecordingQueue()
    notices = SeriesNotices(lambda: queue, interval=60)
    notices.stored("north", "1.2.3", "1.2.3.4", "1.2.3.4.1")
    notices.close()
    assert _series(queue.sent) == [("1.2.3.4", "1.2.3.4.1")]
    notices.stored("north", "1.2.3", "1.2.3.5", "1.2.3.5.1")  # e.g. a store while draining
    assert _series(queue.sent)[-1] == ("1.2.3.5", "1.2.3.5.1")


def test_the_queue_is_looked_up_at_each_send() -> None:
    first, second = RecordingQueue(), RecordingQueue()
    current = [first]
    notices = SeriesNotices(lambda: current[0], interval=60)
    notices.stored("north", "1.2.3", "1.2.3.4", "1.2.3.4.1")
    current[0] = second  # the archive's queue swapped (a worker test does this)
    notices.flush()
    assert first.sent == [] and len(second.sent) == 1
    notices.close()


def test_series_too_small_for_any_task_are_not_told() -> None:
    queue = RecordingQueue()
    notices = SeriesNotices(lambda: queue, interval=60, smallest_series=4)
    notices.stored("north", "1.2.3", "1.2.3.1", "1.2.3.1.1", series_instances=1)  # one-off
    for number in range(1, 5):  # the index counts 1..4: told, at the fourth
        notices.stored("north", "1.2.3", "1.2.3.2", f"1.2.3.2.{number}", series_instances=number)
    notices.stored("north", "1.2.3", "1.2.3.3", "1.2.3.3.1", series_instances=None)  # unknown
    notices.flush()
    assert sorted(_series(queue.sent)) == [("1.2.3.2", "1.2.3.2.4"), ("1.2.3.3", "1.2.3.3.1")]


def test_a_series_counted_earlier_in_the_beat_keeps_its_largest_count() -> None:
    """Two SCP threads may mark one series out of order; the larger count wins."""
    queue = RecordingQueue()
    notices = SeriesNotices(lambda: queue, interval=60, smallest_series=4)
    notices.stored("north", "1.2.3", "1.2.3.1", "1.2.3.1.5", series_instances=5)
    notices.stored("north", "1.2.3", "1.2.3.1", "1.2.3.1.4", series_instances=4)
    notices.flush()
    assert _series(queue.sent) == [("1.2.3.1", "1.2.3.1.4")]
