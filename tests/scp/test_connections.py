"""Connections that never become associations cannot take the SCP's slots: an idle one is
closed once NOCTIS_ASSOCIATION_REQUEST_TIMEOUT passes without an A-ASSOCIATE-RQ, and one
address holds at most NOCTIS_MAX_CONNECTIONS_PER_ADDRESS connections at once.

The "attackers" connect from other loopback addresses (127.0.0.2, 127.0.1.x) than the modality
(127.0.0.1), as hosts of their own would.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from scp_support import AE_TITLE, MODALITY

from noctis.core.runtime import Runtime
from noctis.scp.server import Scp
from support import wait
from support.archive import register_facility
from support.ports import LOOPBACK

REQUEST_TIMEOUT = 1.0


@pytest.fixture
def limited_scp(embedded_archive: Runtime) -> Iterator[Scp]:
    register_facility(embedded_archive, "st-mary", [{"aeTitle": MODALITY}])
    embedded_archive.settings.association_request_timeout = REQUEST_TIMEOUT
    embedded_archive.settings.max_connections_per_address = 4
    embedded_archive.settings.max_associations = 8
    node = Scp(embedded_archive, host=LOOPBACK, port=0).start()
    yield node
    node.stop(timeout=5)


def idle_connection(port: int, source: str) -> socket.socket:
    connection = socket.create_connection((LOOPBACK, port), timeout=5, source_address=(source, 0))
    connection.settimeout(0.05)
    return connection


def closed_by_server(connection: socket.socket) -> bool:
    try:
        return connection.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def wait_closed(connections: list[socket.socket], within: float) -> None:
    """Wait until the server has closed every connection; fails after ``within`` seconds."""
    remaining = list(connections)

    def all_closed() -> bool:
        remaining[:] = [c for c in remaining if not closed_by_server(c)]
        return not remaining

    wait.until(
        all_closed,
        timeout=within,
        what="the server to close every connection",
        interval=0,
        context=lambda: f"{len(remaining)} connections still open",
    )


def open_after(connection: socket.socket, seconds: float) -> bool:
    """True if the server has not closed ``connection`` within ``seconds`` (it wakes at once
    when the server closes it, so this waits for the event, not for the time)."""
    connection.settimeout(seconds)
    try:
        return not closed_by_server(connection)
    finally:
        connection.settimeout(0.05)


def echo_succeeds(port: int) -> bool:
    ae = AE(ae_title=MODALITY)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    assoc = ae.associate(LOOPBACK, port, ae_title=AE_TITLE)
    if not assoc.is_established:
        return False
    answered = assoc.send_c_echo()
    assoc.release()
    return int(answered.Status) == 0


def test_one_address_holds_a_few_connections_and_idle_ones_are_closed(limited_scp: Scp) -> None:
    connections = [idle_connection(limited_scp.port, "127.0.0.2") for _ in range(10)]
    try:
        refused: list[socket.socket] = []

        def six_refused() -> bool:
            refused.extend(c for c in connections if c not in refused and closed_by_server(c))
            return len(refused) >= 6

        wait.until(six_refused, timeout=REQUEST_TIMEOUT + 3, what="6 refusals", interval=0)
        assert len(refused) == 6, "all but the address's 4 closed"
        kept = [c for c in connections if c not in refused]
        # ...at once: the 4 are still held, their request timeout has not closed them yet.
        assert not any(closed_by_server(c) for c in kept)
        # The modality, from its own address, is served while those 4 wait.
        assert echo_succeeds(limited_scp.port)
        wait_closed(kept, within=REQUEST_TIMEOUT + 3)
        # Once they are gone (their threads end just after their sockets close) the address
        # may connect again.

        def connects_again() -> bool:
            again = idle_connection(limited_scp.port, "127.0.0.2")
            connections.append(again)
            return open_after(again, 0.2)

        wait.until(connects_again, timeout=2, what="the address to be let in again")
    finally:
        for connection in connections:
            connection.close()


def test_idle_connections_from_many_addresses_leave_the_slots_within_the_timeout(
    limited_scp: Scp,
) -> None:
    """40 idle connections, one per address, fill the 8 association slots; a modality gets an
    association as soon as the request timeout has closed them (it used to take ~25 s)."""
    connections = [idle_connection(limited_scp.port, f"127.0.1.{n}") for n in range(1, 41)]
    try:
        wait.until(
            lambda: echo_succeeds(limited_scp.port),
            timeout=REQUEST_TIMEOUT + 4,
            what="a free association slot",
            interval=0.2,
        )
        wait_closed(connections, within=REQUEST_TIMEOUT + 4)
    finally:
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.close()
