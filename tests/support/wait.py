"""The one way tests wait: poll a predicate until it holds, or fail saying what was awaited.

    from support import wait
    row = wait.until(lambda: index.find(uid), timeout=10, what="the instance in the index")

`until` returns the predicate's first truthy value, so a test can wait for and use a result in
one step. On timeout it raises `WaitTimeout` (an AssertionError, so pytest shows it as a failed
expectation) naming what was awaited, the last value seen and, if given, `context()` (a server's
log tail, say). A predicate that knows waiting is pointless (its process exited) raises its own
error: exceptions from the predicate are never swallowed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

LAST_VALUE_CHARS = 500


class WaitTimeout(AssertionError):
    """What a test waited for did not happen in time."""


def until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    context: Callable[[], str] | None = None,
) -> T:
    """Call `predicate` every `interval` seconds until it returns something truthy; return that.

    It is always called at least once, and once more at the deadline, so a slow first call does
    not use up the whole timeout unseen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    message = f"timed out after {timeout:g} s waiting for {what}; last value: {_shown(value)}"
    if context is not None:
        message += f"\n{context()}"
    raise WaitTimeout(message)


def _shown(value: object) -> str:
    text = repr(value)
    if len(text) > LAST_VALUE_CHARS:
        return text[:LAST_VALUE_CHARS] + "..."
    return text
