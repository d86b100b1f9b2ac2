"""Connections that never become associations cannot take the SCP's slots: an idle one is
closed once NOCTIS_ASSOCIATION_REQUEST_TIMEOUT passes without an A-ASSOCIATE-RQ, and one
address holds at most NOCTIS_MAX_CONNECTIONS_PER_ADDRESS connections at once.

The "attackers" connect from other loopback addresses (127.0.0.2, 127.0.1.x) than the modality
(127.0.0.1), as hosts of their own would.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from scp_support import AE_TITLE, MODALITY

from noctis.core.runtime import Runtime
from noctis.scp.server import Scp
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


def wait_closed(connections: list[socket.socket], within: float) -> float:
    """Seconds until the server closed every connection; fails after ``within``."""
    started = time.monotonic()
    remaining = list(connections)
    while remaining:
        remaining = [c for c in remaining if not closed_by_server(c)]
        assert time.monotonic() - started < within, f"{len(remaining)} connections still open"
    return time.monotonic() - started


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
        deadline = time.monotonic() + 0.5
        while len(refused) < 6 and time.monotonic() < deadline:
            refused += [c for c in connections if c not in refused and closed_by_server(c)]
        assert len(refused) == 6, "all but the address's 4 closed at once"
        # The modality, from its own address, is served while those 4 wait.
        assert echo_succeeds(limited_scp.port)
        kept = [c for c in connections if c not in refused]
        assert wait_closed(kept, within=REQUEST_TIMEOUT + 3) < REQUEST_TIMEOUT + 3
        # Once they are gone (their threads end just after their sockets close) the address
        # may connect again.
        deadline = time.monotonic() + 2
        while True:
            again = idle_connection(limited_scp.port, "127.0.0.2")
            connections.append(again)
            time.sleep(0.2)
            if not closed_by_server(again):
                break
            assert time.monotonic() < deadline, "the address may not connect again"
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
        started = time.monotonic()
        while not echo_succeeds(limited_scp.port):
            assert time.monotonic() - started < REQUEST_TIMEOUT + 4, "slots still held"
            time.sleep(0.2)
        wait_closed(connections, within=REQUEST_TIMEOUT + 4)
    finally:
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.close()
