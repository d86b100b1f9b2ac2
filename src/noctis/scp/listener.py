"""The SCP's listening side: pynetdicom's threaded server with what Noctis adds, in public
socketserver and pynetdicom terms (both the fast path and the plain pynetdicom fallback):

- `NoctisServer` accepts from a listening socket that several SCP processes share (see
  `listening_socket`) when it is given one, caps the connections of one address
  (`noctis.scp.connections`), and upgrades each association as it opens (``upgrade``: the
  fast path's reactors, `noctis.scp.fast.association.accept`) before it starts.
- `NoctisRequestHandler` leaves a DICOM TLS handshake to the connection's own thread, bounded
  in time (pynetdicom shakes hands in the accepting thread, where one silent peer would stop
  every other from connecting), and uncounts the connection when its association ends.
- `SharedContexts` spares every association a deep copy of the ~200 storage presentation
  contexts (about 60 ms per association, for contexts negotiation only reads).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from noctis.scp.connections import ConnectionLimiter

log = logging.getLogger(__name__)


class SharedContexts(list):  # type: ignore[type-arg]
    """The acceptor's presentation contexts, shared by every association, not copied."""

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedContexts:
        return self


class NoctisRequestHandler(RequestHandler):
    server: NoctisServer

    def handle(self) -> None:
        """Runs in the connection's own thread: the TLS handshake, the association, then waits
        for the association to end and uncounts the connection."""
        try:
            if isinstance(self.request, ssl.SSLSocket) and not self._shake_hands(self.request):
                return
            super().handle()  # makes the association, opens it (EVT_CONN_OPEN), starts it
            opened = self.server.opened_in_this_thread()
            if opened is not None:
                opened.join()
        finally:
            self.server.release_connection(self.client_address)

    def _shake_hands(self, connection: ssl.SSLSocket) -> bool:
        waited = connection.gettimeout()
        connection.settimeout(self.server.request_timeout)
        try:
            connection.do_handshake()
        except (OSError, ValueError) as exc:  # ssl.SSLError and TimeoutError are OSErrors
            log.info("DICOM TLS handshake with %s failed: %s", self.client_address[0], exc)
            with contextlib.suppress(OSError):
                connection.close()
            return False
        connection.settimeout(waited)
        return True


class NoctisServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, optionally accepting from a listening socket that sibling
    processes accept from too (``listener``)."""

    daemon_threads = True
    # socketserver listens with a backlog of 5: a burst of connections beyond it waits for
    # TCP to retransmit the handshake (1 s and more) before it is even accepted.
    request_queue_size = 128

    def __init__(
        self,
        *args: Any,
        upgrade: Callable[[Association], None],
        max_connections_per_address: int,
        request_timeout: float,
        listener: socket.socket | None = None,
        **kwargs: Any,
    ):
        """``upgrade``: called with each new association before it starts."""
        self.upgrade = upgrade
        self.listener = listener
        self.connections = ConnectionLimiter(max_connections_per_address)
        self.request_timeout = request_timeout
        self._opened = threading.local()  # the association each connection thread opened
        kwargs.setdefault("request_handler", NoctisRequestHandler)
        handlers = [*kwargs.pop("evt_handlers", []), (evt.EVT_CONN_OPEN, self._on_open)]
        super().__init__(*args, evt_handlers=handlers, **kwargs)

    def _on_open(self, event: evt.Event) -> None:
        """EVT_CONN_OPEN, in the connection's thread, before the association starts."""
        self._opened.association = event.assoc
        self.upgrade(event.assoc)

    def opened_in_this_thread(self) -> Association | None:
        opened: Association | None = getattr(self._opened, "association", None)
        self._opened.association = None
        return opened

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        connection, address = self.socket.accept()
        if self.ssl_context:
            # The handshake happens in the connection's thread (NoctisRequestHandler.handle).
            connection = self.ssl_context.wrap_socket(
                connection, server_side=True, do_handshake_on_connect=False
            )
        return connection, address

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request(request, client_address)
        except BaseException:  # the thread did not start (socketserver closes the socket)
            self.release_connection(client_address)
            raise

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Counted and handled, or (over the address's cap) closed at once."""
        return self.connections.admit(_host(client_address))

    def release_connection(self, client_address: Any) -> None:
        self.connections.release(_host(client_address))

    def server_bind(self) -> None:
        if self.listener is None:
            super().server_bind()
            return
        self.socket.close()  # the one socketserver made: the shared one is bound already
        self.socket = self.listener
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        if self.listener is None:
            super().server_activate()

    def server_close(self) -> None:
        if self.listener is None:
            super().server_close()
        else:
            # Only this process's descriptor: a shutdown() would stop the siblings too.
            self.socket.close()

    def shutdown(self) -> None:
        """Stop accepting and close the listening socket (open associations carry on)."""
        # pynetdicom's AssociationServer.shutdown also unregisters the server from its AE,
        # which only AE.start_server registers; `noctis.scp.server` makes it with make_server.
        socketserver.BaseServer.shutdown(self)
        self.server_close()


def _host(client_address: Any) -> str:
    return str(client_address[0]) if isinstance(client_address, tuple) else str(client_address)


def listening_socket(host: str, port: int, backlog: int = 64) -> socket.socket:
    """The listening socket several SCP processes accept from (each is passed a copy).

    Non-blocking, so the process that loses the race for a connection goes back to waiting
    instead of blocking in accept(). A process busy with its associations gets to accept later
    than an idle one, so connections spread by load; one SO_REUSEPORT socket per process
    spreads them by a hash of their addresses, which sent four associations 3:1 or 4:0 to two
    processes more often than 2:2.
    """
    sock = socket.create_server((host, port), backlog=backlog)
    sock.setblocking(False)
    return sock
