"""Repeated timings: one warm-up, then N runs; median and 95th percentile.

The client's garbage collector is off while a request is timed and collects between requests
(as `timeit` does; what a request parses has no reference cycles, so nothing piles up):
parsing a 300-instance metadata response in this process, whose heap holds the whole run, set
off a full collection every third request, 90 ms that were the client's.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Timing:
    """How long one request took against one target, over `runs` warm runs."""

    target: str
    name: str
    runs: int = 0
    median_ms: float = math.nan
    p95_ms: float = math.nan
    min_ms: float = math.nan
    first_ms: float = math.nan  # the warm-up request: cold caches, new connection
    detail: str = ""  # what the response held (matches, bytes), checked against the data
    ok: bool = False
    error: str = ""
    samples_ms: list[float] = field(default_factory=list)
    round: int = 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile (p95 of 20 runs is the 19th fastest)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def pooled(timings: list[Timing]) -> Timing:
    """One request over several rounds: the samples of every round together."""
    first = timings[0]
    samples = [s for t in timings for s in t.samples_ms]
    errors = [f"round {t.round}: {t.error}" for t in timings if not t.ok]
    merged = Timing(
        target=first.target,
        name=first.name,
        detail=first.detail,
        ok=not errors and bool(samples),
        error="; ".join(errors),
        samples_ms=samples,
        round=0,
    )
    if samples:
        merged.runs = len(samples)
        merged.median_ms = statistics.median(samples)
        merged.p95_ms = percentile(samples, 0.95)
        merged.min_ms = min(samples)
        merged.first_ms = statistics.median(t.first_ms for t in timings)
    return merged


def measure(target: str, name: str, runs: int, once: Callable[[], str]) -> Timing:
    """Time `once` (which returns a detail string or raises) after one untimed warm-up."""
    timing = Timing(target=target, name=name)
    try:
        began = time.perf_counter()
        timing.detail = once()  # warm-up: caches, connections, lazy imports
        timing.first_ms = (time.perf_counter() - began) * 1000
        gc.collect()
        gc.disable()
        try:
            for _ in range(runs):
                began = time.perf_counter()
                detail = once()
                timing.samples_ms.append((time.perf_counter() - began) * 1000)
                if detail != timing.detail:
                    raise AssertionError(f"answer changed: {timing.detail} -> {detail}")
        finally:
            gc.enable()
    except Exception as exc:
        timing.error = f"{type(exc).__name__}: {exc}"
        return timing
    timing.runs = len(timing.samples_ms)
    timing.median_ms = statistics.median(timing.samples_ms)
    timing.p95_ms = percentile(timing.samples_ms, 0.95)
    timing.min_ms = min(timing.samples_ms)
    timing.ok = True
    return timing
