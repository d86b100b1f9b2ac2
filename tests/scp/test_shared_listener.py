"""The board SCP processes sharing a port keep of their open connections: which process
leaves a waiting connection to another (pure logic; `test_server` shows two real processes
sharing eight associations 4:4)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest

from noctis.scp.listener import DEFER_SECONDS, NOT_ACCEPTING, SharedListener

Make = Callable[[list[int], int], SharedListener]


@pytest.fixture
def listener() -> Iterator[Make]:
    """A process's view of ``board`` at ``slot`` (on a socket it never accepts from)."""
    made: list[socket.socket] = []

    def make(board: list[int], slot: int) -> SharedListener:
        made.append(socket.socket())
        return SharedListener(made[-1], board, slot)

    yield make
    for each in made:
        each.close()


def test_the_busier_process_leaves_the_connection_for_a_moment_only(listener: Make) -> None:
    busy = listener([3, 1], 0)
    began = time.monotonic()
    while busy.leave_to_a_sibling():
        assert time.monotonic() - began < 1, "deferred without end"
    assert DEFER_SECONDS <= time.monotonic() - began < DEFER_SECONDS + 0.2
    # The next waiting connection gets its own moment.
    assert busy.leave_to_a_sibling()
    # So does one arriving after a sibling took the last one mid-wait (no look meanwhile).
    time.sleep(DEFER_SECONDS * 2)
    assert busy.leave_to_a_sibling()
    time.sleep(DEFER_SECONDS / 2)
    assert busy.leave_to_a_sibling()


def test_the_least_busy_and_an_equally_busy_process_take_it_at_once(listener: Make) -> None:
    assert not listener([1, 3], 0).leave_to_a_sibling()
    assert not listener([2, 2], 1).leave_to_a_sibling()


def test_no_connection_is_left_to_a_process_that_does_not_accept(listener: Make) -> None:
    board = [5, NOT_ACCEPTING]
    assert not listener(board, 0).leave_to_a_sibling()
    sibling = listener(board, 1)
    sibling.accepting()
    assert board == [5, 0]
    assert listener(board, 0).leave_to_a_sibling()
    sibling.not_accepting()
    assert not listener(board, 0).leave_to_a_sibling()


def test_opened_and_closed_connections_are_counted_in_the_process_slot(listener: Make) -> None:
    board = [0, 0]
    mine = listener(board, 1)
    mine.opened()
    mine.opened()
    mine.closed()
    assert board == [0, 1]
