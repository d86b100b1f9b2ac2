"""Connections before they are associations: how many one address may hold at once.

A TCP connection takes an association slot (``NOCTIS_MAX_ASSOCIATIONS``) from the moment it is
accepted, before its A-ASSOCIATE-RQ arrives. Two limits keep a few idle sockets from taking
every slot: the A-ASSOCIATE-RQ (and, with DICOM TLS, the handshake before it) must come within
``NOCTIS_ASSOCIATION_REQUEST_TIMEOUT`` seconds, and one address holds at most
``NOCTIS_MAX_CONNECTIONS_PER_ADDRESS`` connections at once (more are closed at accept).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

log = logging.getLogger(__name__)


class ConnectionLimiter:
    """Open connections per peer address, under a cap (0: no cap)."""

    def __init__(self, per_address: int) -> None:
        self.per_address = per_address
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def admit(self, address: str) -> bool:
        """Count a new connection from ``address``; False (not counted) over the cap."""
        with self._lock:
            if self.per_address and self._open[address] >= self.per_address:
                refused = True
            else:
                self._open[address] += 1
                refused = False
        if refused:
            log.warning(
                "closed a connection from %s: it holds %d already (NOCTIS_MAX_CONNECTIONS_PER_"
                "ADDRESS)",
                address,
                self.per_address,
            )
        return not refused

    def release(self, address: str) -> None:
        with self._lock:
            self._open[address] -= 1
            if self._open[address] <= 0:
                del self._open[address]
