"""What keeps a login flood from starving the archive: a rate limit per client address,
checked before any password is hashed, and a bound on the hashes running at once.

An argon2 verification costs tens of MiB and a lot of CPU on purpose. A few dozen of them at
once (random user names cost as much as real ones, for timing safety) would take every thread
of the request pool and every core, and stall QIDO and C-STORE with them. Here an address gets
a small burst of attempts and then a steady trickle (429 with Retry-After past that), and
hashes run in threads of their own, a few at a time, with a short queue (503 with Retry-After
when it is full).
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")


IPV6_PREFIX = 64  # what one subscriber, host or LAN is given (RFC 6177): one bucket for all


def rate_limit_key(address: str) -> str:
    """The bucket a client address spends from: an IPv4 address itself (an IPv4-mapped IPv6
    one too), an IPv6 address its /64. Keyed by the whole IPv6 address, whoever holds a
    /64 -- any home router, any cloud VM -- would have 2^64 fresh buckets to rotate through.
    Anything else (no address known) is its own key."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))


class AddressRateLimiter:
    """A token bucket per client address (per IPv6 /64: `rate_limit_key`): `burst`
    attempts at once, refilled at `per_minute`. Kept in this process's memory (it protects
    this process's CPU); the oldest addresses are forgotten beyond `max_addresses`."""

    def __init__(self, burst: int, per_minute: float, max_addresses: int = 50_000) -> None:
        self._burst = float(burst)
        self._rate = per_minute / 60.0  # tokens per second
        self._max = max_addresses
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, address: str) -> float | None:
        """Spend one attempt of `address`: None if allowed, else seconds until the next."""
        key = rate_limit_key(address)
        moment = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop(key, (self._burst, moment))
            tokens = min(self._burst, tokens + (moment - last) * self._rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[key] = (tokens, moment)  # most recent last
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        if allowed:
            return None
        return (1.0 - tokens) / self._rate if self._rate > 0 else math.inf


class HashingBusy(Exception):
    """Every hashing slot is taken and the queue is full."""


class HashingGate:
    """Runs password hashing in worker threads, at most `concurrency` at once and with at
    most `queue` more waiting; never on the event loop, never in the request thread pool
    (whose threads the rest of the API needs)."""

    def __init__(self, concurrency: int, queue: int) -> None:
        self._concurrency = concurrency
        self._capacity = concurrency + queue
        self._in_flight = 0
        self._limiter: anyio.CapacityLimiter | None = None  # made in the event loop

    async def run(self, work: Callable[[], T]) -> T:
        if self._in_flight >= self._capacity:
            raise HashingBusy
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._concurrency)
        self._in_flight += 1
        try:
            return await anyio.to_thread.run_sync(work, limiter=self._limiter)
        finally:
            self._in_flight -= 1
