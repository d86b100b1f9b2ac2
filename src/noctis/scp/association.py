"""Where Noctis plugs into pynetdicom's acceptor, kept in one place.

pynetdicom 3.0 offers no public hook for these, so each override is small and says why:

- `NoctisServer` accepts from a listening socket that several SCP processes share (see
  `listening_socket`) when it is given one, and does not hand every association a deep copy
  of the ~200 storage presentation contexts (about 60 ms per association, for contexts
  negotiation only reads).
- `NoctisAssociation` answers C-GET and C-MOVE itself (`noctis.scp.retrieve`) so retrieved
  instances are sent as the bytes stored, and C-FIND (`noctis.scp.find.serve_find`) so its
  many responses are encoded and sent in batches; every other request goes to pynetdicom.
- `spool_received_datasets` makes pynetdicom write each received data set to a file in the
  spool directory (chunked receive) instead of memory or the system temp dir.
- `NoctisRequestHandler` makes both of an association's threads event-driven
  (`noctis.scp.reactor`) instead of polling every millisecond, and lets the DUL thread receive
  C-STORE requests itself (`noctis.scp.direct_store`).
- `NoctisServer` caps the connections of one address (`noctis.scp.connections`) and leaves a
  DICOM TLS handshake to the connection's own thread, bounded in time (pynetdicom shakes hands
  in the accepting thread, where one silent peer would stop every other from connecting).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import socketserver
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Any, cast

from pynetdicom import _config, dimse_messages
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from noctis.dicom.part10 import file_meta
from noctis.scp.connections import ConnectionLimiter
from noctis.scp.contexts import FIND_MODELS, GET_MODELS, MOVE_MODELS
from noctis.scp.direct_store import DirectStore
from noctis.scp.find import serve_find
from noctis.scp.reactor import EventDrivenDUL, SignallingQueue, serve_until_done
from noctis.scp.retrieve import serve_retrieve
from noctis.scp.scp_context import ScpContext

log = logging.getLogger(__name__)

_RETRIEVE_MODELS = frozenset({*GET_MODELS, *MOVE_MODELS})


def configure_pynetdicom() -> None:
    """Process-wide pynetdicom settings the SCP and its client rely on."""
    # Send files from disk as they are (no decode/re-encode): byte-exact retrieves.
    _config.STORE_SEND_CHUNKED_DATASET = True
    # pynetdicom's standard handlers log every PDU and DIMSE message; at ~1,000 messages a
    # second that formatting costs more than the store itself.
    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_REQUEST_IDENTIFIERS = False
    # Each C-FIND/C-GET/C-MOVE response identifier is pretty-printed for the log otherwise,
    # whatever the log level: a third of a C-FIND's time.
    _config.LOG_RESPONSE_IDENTIFIERS = False


def spool_received_datasets(directory: Path) -> None:
    """Receive each C-STORE data set into a Part 10 file under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    _config.STORE_RECV_CHUNKED_DATASET = True
    # pynetdicom creates the spool file with tempfile.NamedTemporaryFile and no ``dir``.
    dimse_messages.NamedTemporaryFile = functools.partial(  # type: ignore[assignment]
        tempfile.NamedTemporaryFile, dir=str(directory), prefix="incoming-"
    )
    # It then writes the file meta through a pydicom FileMetaDataset: ~0.3 ms a message.
    # These two names are used only there; the bytes written are the same.
    dimse_messages.create_file_meta = _file_meta_values  # type: ignore[assignment]
    dimse_messages.write_file_meta_info = _write_file_meta  # type: ignore[assignment]


def _file_meta_values(
    *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, **_: Any
) -> tuple[str, str, str]:
    return str(sop_class_uid), str(sop_instance_uid), str(transfer_syntax)


def _write_file_meta(handle: Any, values: tuple[str, str, str]) -> None:
    handle.write(file_meta(*values))


class SharedContexts(list):  # type: ignore[type-arg]
    """The acceptor's presentation contexts, shared by every association, not copied."""

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedContexts:
        return self


class NoctisAssociation(Association):
    scp_context: ScpContext
    _wake: threading.Event  # set when a DIMSE message or an ACSE primitive arrives
    _release_connection: functools.partial[None]  # uncounts it in the server's limiter

    def run(self) -> None:
        try:
            super().run()
        finally:
            self._release_connection()

    def _run_reactor(self) -> None:
        serve_until_done(self, self._wake)

    def _serve_request(self, msg: Any, context_id: int) -> None:
        context = self._accepted_cx.get(context_id)
        if (
            isinstance(msg, C_FIND)
            and msg.is_valid_request
            and context is not None
            and str(context.abstract_syntax) in FIND_MODELS
            and not self._sent_release
        ):
            # C-CANCELs are tracked per request, as pynetdicom's _serve_request does, except
            # that one for this very request, come in before its turn, still cancels it.
            self.dimse.cancel_req = {
                key: value for key, value in self.dimse.cancel_req.items() if key == msg.MessageID
            }
            try:
                serve_find(self, msg, context, self.scp_context)
            finally:
                self.dimse.cancel_req = {}
            return
        if (
            isinstance(msg, C_GET | C_MOVE)
            and msg.is_valid_request
            and context is not None
            and str(context.abstract_syntax) in _RETRIEVE_MODELS
            and not self._sent_release
        ):
            # What pynetdicom's _serve_request does around a service class, so sub-operation
            # C-STOREs can pause the reactor and C-CANCELs are tracked per request.
            self.dimse.cancel_req = {}
            self._is_paused = True
            try:
                serve_retrieve(self, msg, context, self.scp_context)
            finally:
                self._is_paused = False
                self.dimse.cancel_req = {}
            return
        super()._serve_request(msg, context_id)


class NoctisRequestHandler(RequestHandler):
    server: NoctisServer

    def handle(self) -> None:
        """Runs in the connection's own thread: the TLS handshake, then the association (its
        thread uncounts the connection when it ends; here only if it never started)."""
        started = False
        try:
            if isinstance(self.request, ssl.SSLSocket) and not self._shake_hands(self.request):
                return
            super().handle()
            started = True
        finally:
            if not started:
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

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        # Same objects, with the retrieve routing and reactors above; nothing has started yet.
        assoc.__class__ = NoctisAssociation
        assoc._release_connection = functools.partial(  # type: ignore[attr-defined]
            self.server.release_connection, self.client_address
        )
        assoc.scp_context = self.server.scp_context  # type: ignore[attr-defined]
        wake = assoc._wake = threading.Event()  # type: ignore[attr-defined]
        assoc.dimse.msg_queue = SignallingQueue(wake.set)
        dul = cast(EventDrivenDUL, assoc.dul)
        dul.__class__ = EventDrivenDUL
        dul.install_wake_up(wake.set)
        dul.install_direct_store(DirectStore(assoc, assoc.scp_context, dul.send_bytes))
        return assoc


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
        scp_context: ScpContext,
        listener: socket.socket | None = None,
        **kwargs: Any,
    ):
        self.scp_context = scp_context
        self.listener = listener
        settings = scp_context.runtime.settings
        self.connections = ConnectionLimiter(settings.max_connections_per_address)
        self.request_timeout = settings.association_request_timeout
        kwargs.setdefault("request_handler", NoctisRequestHandler)
        super().__init__(*args, **kwargs)

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
        # AssociationServer.shutdown also unregisters from ae._servers, where this server,
        # started by `noctis.scp.server`, was never registered.
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
