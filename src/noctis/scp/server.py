"""The DICOM SCP: an AE serving C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET for the archive,
storage commitment, the Modality Worklist and MPPS.

`Scp` runs one listener in this process (tests start it on port 0 and stop it themselves);
the ``noctis scp`` process around it is `noctis.scp.process`. With ``tls_cert_file``/
``tls_key_file`` set the SCP speaks DICOM TLS (PS3.15 B.1); with ``tls_ca_file`` too, callers
must present a certificate that CA signed. ``scp_fast_path`` (default on) picks the fast DIMSE
path (`noctis.scp.fast`) or plain pynetdicom handlers; either way each DIMSE operation is
served by the same functions (`noctis.scp.store`, `find`, `retrieve`, `echo`).
"""

from __future__ import annotations

import functools
import logging
import ssl
import threading
import time
from typing import Any

from pynetdicom import AE, evt

from noctis.core.runtime import Runtime
from noctis.scp.contexts import scp_contexts
from noctis.scp.echo import handle_echo
from noctis.scp.fast import compat
from noctis.scp.fast.association import accept
from noctis.scp.listener import NoctisServer, SharedContexts, SharedListener
from noctis.scp.metrics import get_metrics
from noctis.scp.modality_worklist import handle_c_find
from noctis.scp.mpps import handle_n_create, handle_n_set
from noctis.scp.scp_context import ScpContext
from noctis.scp.store import handle_store
from noctis.settings import Settings

log = logging.getLogger(__name__)

IMPLEMENTATION_VERSION = "NOCTIS_010"


class Scp:
    """One listening SCP in this process, serving ``runtime``'s archive."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        host: str | None = None,
        port: int | None = None,
        listener: SharedListener | None = None,
    ) -> None:
        """``listener``: a listening socket shared with sibling SCP processes
        (`noctis.scp.listener.shared_listener`), instead of one of its own."""
        settings = runtime.settings
        self.runtime = runtime
        self.scp_context = ScpContext.create(runtime)
        self.host = settings.scp_host if host is None else host
        self.requested_port = settings.scp_port if port is None else port
        self.listener = listener
        self.ae = _application_entity(settings)
        self._server: NoctisServer | None = None
        self._thread: threading.Thread | None = None
        self._established: set[int] = set()
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the SCP is not started")
        return int(self._server.server_address[1])

    @property
    def serving(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def active_associations(self) -> list[Any]:
        return self._server.active_associations if self._server is not None else []

    def start(self) -> Scp:
        get_metrics()  # registered before the first association, not by it
        compat.configure()
        compat.spool_received_datasets(self.scp_context.spool_dir)
        settings = self.runtime.settings
        self._server = server = self.ae.make_server(  # type: ignore[assignment]
            (self.host, self.requested_port),
            ae_title=self.scp_context.ae_title,
            contexts=SharedContexts(scp_contexts()),
            ssl_context=tls_context(settings),
            evt_handlers=self._handlers(),
            server_class=NoctisServer,
            upgrade=functools.partial(accept, scp_context=self.scp_context),
            max_connections_per_address=settings.max_connections_per_address,
            request_timeout=settings.association_request_timeout,
            listener=self.listener,
        )
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="noctis-scp-accept",
            daemon=True,
        )
        self._thread.start()
        log.info(
            "DICOM SCP %s listening on %s:%d (%s)",
            self.scp_context.ae_title,
            self.host,
            self.port,
            "fast DIMSE path" if self.scp_context.fast_path else "plain pynetdicom handlers",
        )
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting; wait up to ``timeout`` s (default: the drain setting) for open
        associations, then abort them."""
        if timeout is None:
            timeout = self.runtime.settings.scp_drain_seconds
        if self._server is None:
            return
        self._server.shutdown()
        deadline = time.monotonic() + timeout
        # Wait for associations in use; a connection that never sent an A-ASSOCIATE-RQ (a TCP
        # probe, a port scan) would otherwise hold the drain until its ACSE timeout.
        while time.monotonic() < deadline and any(
            assoc.is_established for assoc in self.active_associations
        ):
            time.sleep(0.05)
        left = self.active_associations
        busy = [assoc for assoc in left if assoc.is_established]
        for assoc in left:
            assoc.abort()
        if busy:
            log.warning("aborted %d association(s) still open after %.0f s", len(busy), timeout)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        # Results still waiting for a requester that is down are given up (each is logged).
        self.scp_context.commitment.stop()

    def _handlers(self) -> list[Any]:
        """pynetdicom's event handlers: thin adapters over the service functions. C-GET and
        C-MOVE are served by the association itself (`noctis.scp.fast.association`)."""
        scp_context = self.scp_context
        return [
            (evt.EVT_REQUESTED, scp_context.access.on_requested),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_CONN_CLOSE, self._on_closed),
            (evt.EVT_C_ECHO, handle_echo, [scp_context]),
            (evt.EVT_C_STORE, handle_store, [scp_context]),
            # C-FIND of the query/retrieve models, and of the Modality Worklist
            (evt.EVT_C_FIND, handle_c_find, [scp_context]),
            (evt.EVT_N_CREATE, handle_n_create, [scp_context]),  # MPPS
            (evt.EVT_N_SET, handle_n_set, [scp_context]),  # MPPS
        ]

    def _on_established(self, event: evt.Event) -> None:
        metrics = get_metrics()
        metrics.associations_total.inc()
        metrics.associations_active.inc()
        metrics.process_associations.inc()
        with self._lock:
            self._established.add(id(event.assoc))

    def _on_closed(self, event: evt.Event) -> None:
        self.scp_context.audit.association_ended(event.assoc)
        with self._lock:
            if id(event.assoc) not in self._established:
                return
            self._established.discard(id(event.assoc))
        get_metrics().associations_active.dec()


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server-side TLS context the settings ask for, or None for plain DICOM."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if settings.tls_ca_file is not None:
        context.load_verify_locations(settings.tls_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _application_entity(settings: Settings) -> AE:
    ae = AE(ae_title=settings.ae_title.strip())
    ae.maximum_associations = settings.max_associations
    ae.maximum_pdu_size = settings.max_pdu_size
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.network_timeout
    # The acceptor's ACSE (ARTIM) timer: how long a new connection may wait to send its
    # A-ASSOCIATE-RQ (noctis.scp.connections) and a released one to close.
    ae.acse_timeout = min(settings.network_timeout, settings.association_request_timeout)
    ae.implementation_version_name = IMPLEMENTATION_VERSION
    # Access control is ours (EVT_REQUESTED): the built-in checks would reject first, with no
    # log line or metric saying why.
    ae.require_called_aet = False
    ae.require_calling_aet = []
    return ae
