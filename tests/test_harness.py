"""The test harness itself: the one wait helper and the traceback check on server logs."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from support import wait
from support.logs import ServerLogs


def test_until_returns_the_first_truthy_value() -> None:
    answers = iter([None, 0, "", {"ready": True}])
    assert wait.until(lambda: next(answers), timeout=5, what="an answer", interval=0) == {
        "ready": True
    }


def test_until_says_what_it_waited_for_and_the_last_value_seen() -> None:
    counter = itertools.count()
    with pytest.raises(wait.WaitTimeout) as failure:
        wait.until(
            lambda: next(counter) < 0,
            timeout=0.1,
            what="a negative number",
            interval=0.01,
            context=lambda: "what the server said",
        )
    message = str(failure.value)
    assert "waiting for a negative number" in message
    assert "last value: False" in message
    assert message.endswith("what the server said")
    assert isinstance(failure.value, AssertionError)


def test_until_lets_the_predicates_own_error_through_at_once() -> None:
    calls = []

    def exited() -> bool:
        calls.append(1)
        raise RuntimeError("the server exited")

    with pytest.raises(RuntimeError, match="the server exited"):
        wait.until(exited, timeout=30, what="a server")
    assert len(calls) == 1


def test_server_logs_report_each_traceback_with_its_server(tmp_path: Path) -> None:
    clean, broken = tmp_path / "clean.log", tmp_path / "broken.log"
    clean.write_text("listening on 127.0.0.1:11112\nWARNING slow client\n")
    broken.write_text(
        "started\nTraceback (most recent call last):\n"
        "  File \"x.py\", line 1, in <module>\nKeyError: 'facility'\n"
    )
    logs = ServerLogs()
    logs.watch("noctis scp", clean)
    logs.watch("noctis api", broken)
    logs.watch("a server that never wrote its log", tmp_path / "absent.log")
    logs.watch("a container", lambda: "no trouble here")
    (problem,) = logs.problems()
    assert problem.startswith("noctis api logged a traceback:")
    assert "KeyError: 'facility'" in problem
