"""The SCP's listening side: pynetdicom's threaded server with what Noctis adds, in public
socketserver and pynetdicom terms (both the fast path and the plain pynetdicom fallback):

- `NoctisServer` accepts from a listening socket that several SCP processes share (see
  `listening_socket`) when it is given one, caps the connections of one address
  (`noctis.scp.connections`), and upgrades each association as it opens (``upgrade``: the
  fast path's reactors, `noctis.scp.fast.association.accept`) before it starts.
- `NoctisRequestHandler` leaves a DICOM TLS handshake to the connection's own thread, bounded
  in time (pynetdicom shakes hands in the accepting thread, where one silent peer would stop
  every other from connecting), and uncounts the connection when its association ends.
- `SharedListener` is that shared socket with a board of each process's open connections: a
  process with more than another leaves a waiting connection to it for a moment.
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
import time
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from noctis.scp.connections import ConnectionLimiter

log = logging.getLogger(__name__)


# How long a process leaves a waiting connection to a less busy sibling before taking it
# itself (the sibling may be stuck), and how long it waits between looks.
DEFER_SECONDS = 0.02
DEFER_STEP_SECONDS = 0.001
# A slot's count while its process is not accepting (starting, stopping or dead): never less
# busy than a process that accepts.
NOT_ACCEPTING = 2**30


@dataclass
class SharedListener:
    """The listening socket several SCP processes accept from, and a board in shared memory
    of how many connections each holds (``slot``: this process's). Without it, connections
    arriving together went to whichever process woke first: four associations split 4:0 or
    3:1 between two processes as often as 2:2, leaving a core idle."""

    socket: socket.socket
    board: MutableSequence[int]  # one slot per process (multiprocessing RawArray)
    slot: int
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _deferring_since: float | None = field(default=None, init=False, repr=False)
    _last_look: float = field(default=0.0, init=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:  # passed to a spawned sibling: no lock
        return {"socket": self.socket, "board": self.board, "slot": self.slot}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["socket"], state["board"], state["slot"])  # type: ignore[misc]

    def for_slot(self, slot: int) -> SharedListener:
        return SharedListener(self.socket, self.board, slot)

    def leave_to_a_sibling(self) -> bool:
        """True while another process holds fewer connections than this one (for at most
        DEFER_SECONDS per waiting connection)."""
        mine = self.board[self.slot]
        if all(mine <= other for other in self.board):
            self._deferring_since = None
            return False
        now = time.monotonic()
        if self._deferring_since is None or now - self._last_look > DEFER_SECONDS:
            self._deferring_since = now  # another waiting connection (a sibling took the last)
        self._last_look = now
        if now - self._deferring_since >= DEFER_SECONDS:
            self._deferring_since = None
            return False
        time.sleep(DEFER_STEP_SECONDS)
        return True

    def accepting(self) -> None:
        """This process accepts from now on, holding no connection yet."""
        with self._lock:
            self.board[self.slot] = 0

    def not_accepting(self, slot: int | None = None) -> None:
        """This process (or the one at ``slot``) no longer accepts: none leaves it a
        connection."""
        self.board[self.slot if slot is None else slot] = NOT_ACCEPTING

    def opened(self) -> None:
        with self._lock:
            self.board[self.slot] += 1

    def closed(self) -> None:
        with self._lock:
            self.board[self.slot] -= 1


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
        listener: SharedListener | None = None,
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
        if self.listener is not None and self.listener.leave_to_a_sibling():
            raise BlockingIOError("left to a less busy SCP process")  # socketserver: skipped
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
        admitted = self.connections.admit(_host(client_address))
        if admitted and self.listener is not None:
            self.listener.opened()
        return admitted

    def release_connection(self, client_address: Any) -> None:
        self.connections.release(_host(client_address))
        if self.listener is not None:
            self.listener.closed()

    def server_bind(self) -> None:
        if self.listener is None:
            super().server_bind()
            return
        self.socket.close()  # the one socketserver made: the shared one is bound already
        self.socket = self.listener.socket
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        if self.listener is None:
            super().server_activate()
        else:
            self.listener.accepting()

    def server_close(self) -> None:
        if self.listener is None:
            super().server_close()
        else:
            # Only this process's descriptor: a shutdown() would stop the siblings too.
            self.listener.not_accepting()
            self.socket.close()

    def shutdown(self) -> None:
        """Stop accepting and close the listening socket (open associations carry on)."""
        # pynetdicom's AssociationServer.shutdown also unregisters the server from its AE,
        # which only AE.start_server registers; `noctis.scp.server` makes it with make_server.
        socketserver.BaseServer.shutdown(self)
        self.server_close()


def _host(client_address: Any) -> str:
    return str(client_address[0]) if isinstance(client_address, tuple) else str(client_address)


def shared_listener(host: str, port: int, processes: int) -> SharedListener:
    """The listening socket and board for ``processes`` SCP processes; this one is slot 0,
    `SharedListener.for_slot` gives each sibling its own."""
    import multiprocessing

    board = multiprocessing.get_context("spawn").RawArray("i", [NOT_ACCEPTING] * processes)
    return SharedListener(listening_socket(host, port), board, 0)


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
