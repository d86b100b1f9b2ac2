"""Which series received instances, told to the tasks once per series per beat.

Sending INSTANCE_STORED for every stored instance cost as much as the store itself for small
instances: a broker message per instance, or in embedded mode an in-process task with two index
reads per instance, all competing with the SCP for the GIL. Stores now only mark their series
here (a dict update); a beat thread sends one INSTANCE_STORED per marked series every
``interval`` seconds, naming the series' latest instance. The task reads the series' state when
it runs, so the debounce downstream (``QUIET_SECONDS`` before a metadata bundle is built) still
accounts for every instance. A series the index counts too few instances in for any task to
act on (``smallest_series``: a metadata bundle needs four) is not told at all: a study of
single instances costs no task per instance.

A notice starts derived work (metadata bundles), never a part of durability: an instance is
stored and indexed before it is marked. If the process dies between a store and the next beat,
the series' bundle waits for its next store, and until then the API reads the instances'
headers instead (slower, the same answer). ``close`` sends what is pending.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from noctis.core.queue import INSTANCE_STORED, TaskQueue, facility_queue

BEAT_SECONDS = 0.5

_SeriesKey = tuple[str, str, str]  # facility, study, series


class SeriesNotices:
    def __init__(
        self,
        queue: Callable[[], TaskQueue],
        interval: float | None = None,
        *,
        smallest_series: int = 1,
    ) -> None:
        self._queue = queue  # looked up at each send: the archive's queue may be swapped
        self._interval = BEAT_SECONDS if interval is None else interval
        # A series the index counts fewer instances in is not told: no task acts on it.
        self._smallest_series = smallest_series
        self._pending: dict[_SeriesKey, tuple[str, int | None]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def stored(
        self,
        facility: str,
        study: str,
        series: str,
        sop_instance: str,
        series_instances: int | None = None,
    ) -> None:
        """An instance of this series was stored, and the index now counts
        ``series_instances`` in it (None: unknown); the tasks hear of it at the next beat."""
        key = (facility, study, series)
        with self._lock:
            earlier = self._pending.get(key)
            if earlier is not None:
                series_instances = _largest(earlier[1], series_instances)
            self._pending[key] = (sop_instance, series_instances)
            closed = self._closed
            if not closed and self._thread is None:
                self._thread = threading.Thread(
                    target=self._beat, name="noctis-series-notices", daemon=True
                )
                self._thread.start()
        if closed:  # no beat any more: at once
            self.flush()

    def flush(self) -> None:
        """Send every pending notice now."""
        with self._lock:
            pending, self._pending = self._pending, {}
        queue = self._queue()
        for (facility, study, series), (sop_instance, count) in pending.items():
            if count is not None and count < self._smallest_series:
                continue
            queue.send(
                INSTANCE_STORED,
                queue=facility_queue(facility),
                facility=facility,
                study_instance_uid=study,
                series_instance_uid=series,
                sop_instance_uid=sop_instance,
            )

    def close(self) -> None:
        """Stop the beat and send what is pending; later marks are sent at once."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._stop.set()
        if thread is not None:
            thread.join(timeout=5)
        self.flush()

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()


def _largest(first: int | None, second: int | None) -> int | None:
    """The larger count; unknown (None) if either is."""
    if first is None or second is None:
        return None
    return max(first, second)
