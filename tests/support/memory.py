"""A process's peak resident memory while something runs: for tests that an input cannot make
a server's memory grow with what it declares."""

from __future__ import annotations

import threading
import time

import psutil


class PeakRss:
    """Samples a process's RSS (this one by default) every few milliseconds inside a ``with``
    block; ``growth`` is the peak above the RSS at the start."""

    def __init__(self, pid: int | None = None) -> None:
        self.process = psutil.Process(pid)
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.start
