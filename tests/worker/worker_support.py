"""Helpers for the worker tests: a store that counts what it is asked, task outcome records,
polling, archives that send tasks to a real broker, and a CT series to store."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import redis

from noctis.core.queue import CeleryQueue
from noctis.core.runtime import Runtime
from noctis.dicom.metadata import decode_bundle
from noctis.settings import Settings
from noctis.storage import IncomingObject, ObjectNotFound, ObjectStore
from noctis.storage.filesystem import FilesystemStore
from support import wait
from support.archive import open_runtime
from support.dicomdata import generate_ct_series
from support.redis import RedisServer

SLICES = 30


def empty_broker(server: RedisServer) -> str:
    """The broker URL, on an empty Redis (no task left over from another test)."""
    server.up()
    redis.Redis.from_url(server.url).flushdb()
    return server.url


def celery_archive(settings: Settings) -> Runtime:
    """A migrated archive whose tasks go to the broker, with a counting store."""
    runtime = open_runtime(
        settings, store=CountingStore(FilesystemStore(settings.resolved_storage_path()))
    )
    assert settings.broker_url
    runtime.queue = CeleryQueue(settings.broker_url)
    return runtime


def ct_series(directory: Path) -> list[Path]:
    """A 30-slice CT series (64x64 pixels: the headers are what matter here)."""
    return generate_ct_series(directory, slices=SLICES, size=64)


class CountingStore:
    """The real store, recording every read and write as (verb, key)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def _record(self, verb: str, key: str) -> None:
        with self._lock:
            self.calls.append((verb, key))

    def count(self, verb: str, key: str | None = None) -> int:
        with self._lock:
            return sum(1 for v, k in self.calls if v == verb and key in (None, k))

    def reads(self) -> list[tuple[str, str]]:
        with self._lock:
            return [c for c in self.calls if c[0] in ("get", "get_range", "iter_chunks")]

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()

    def put(self, key: str, stream: BinaryIO, length: int) -> None:
        self._record("put", key)
        self.inner.put(key, stream, length)

    def incoming(self) -> IncomingObject:
        """The real store's (its commits are not recorded: this counts what workers do)."""
        return self.inner.incoming()

    def get(self, key: str) -> bytes:
        self._record("get", key)
        return self.inner.get(key)

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        self._record("iter_chunks", key)
        return self.inner.iter_chunks(key, chunk_size)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self._record("get_range", key)
        return self.inner.get_range(key, offset, length)

    def delete(self, key: str) -> None:
        self._record("delete", key)
        self.inner.delete(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def check(self) -> None:
        self.inner.check()


class Outcomes:
    """Wraps a task function and records what each call returned (or raised)."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.__name__ = function.__name__  # Celery names and describes tasks by these
        self.__doc__ = function.__doc__
        self.results: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            result = self.function(*args, **kwargs)
        except BaseException as exc:
            with self._lock:
                self.results.append(f"raised {type(exc).__name__}")
            raise
        with self._lock:
            self.results.append(str(result))
        return result

    def __len__(self) -> int:
        with self._lock:
            return len(self.results)


def wait_settled(outcomes: Outcomes, quiet: float, timeout: float = 20.0) -> None:
    """Wait until no task has finished for ``quiet`` seconds."""
    seen, since = len(outcomes), time.monotonic()

    def settled() -> bool:
        nonlocal seen, since
        if len(outcomes) != seen:
            seen, since = len(outcomes), time.monotonic()
        return time.monotonic() - since >= quiet

    wait.until(settled, timeout=timeout, what=f"no task to finish for {quiet:g} s")


def bundle_keys(store: ObjectStore, key: str) -> set[str]:
    """The object keys a stored bundle covers (empty when there is none)."""
    try:
        return set(decode_bundle(store.get(key)))
    except ObjectNotFound:
        return set()
