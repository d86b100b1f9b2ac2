"""The one module that relies on pynetdicom's internals (pynetdicom 3.0.x, see README).

pynetdicom 3.0 offers no public hook for what Noctis does with it, so this module, and no
other (tests/scp/test_compat_boundary.py checks), touches its private members, swaps the
class of its objects, patches its modules and sets its ``_config``. Everything else calls the
functions and hook classes named here. Each assumption is asserted, against every supported
pynetdicom version, by tests/scp/test_compat_contract.py; an upgrade that breaks one fails
there, loudly, instead of in a hospital.

What it assumes of pynetdicom:

- ``_config`` has the settings `configure` and `spool_received_datasets` set, and
  ``dimse_messages`` creates a received data set's spool file with ``NamedTemporaryFile`` and
  writes its file meta with ``create_file_meta`` and ``write_file_meta_info``;
- ``Association._serve_request(msg, context_id)`` serves each DIMSE request and
  ``Association._run_reactor()`` is the association thread's loop (`AssociationHooks`); the
  association has ``_accepted_cx``, ``_sent_release``, ``_kill``, ``_is_paused``,
  ``_reactor_checkpoint`` and ``_dul_ready``, used as its own reactor uses them;
- ``DULServiceProvider._read_pdu_data()`` reads one PDU and ``_is_transport_event()`` polls
  the socket (`DULHooks`); the provider has ``_kill_thread``, ``_idle_timer``, ``_recv_pdu``,
  ``_decode_pdu`` and ``_process_recv_primitive``, and its transport ``_is_connected``;
- an acceptor's Association and DUL objects take a subclass as their class (`become`) after
  they are made and before they start (EVT_CONN_OPEN, `noctis.scp.listener`).
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pynetdicom import _config, dimse_messages
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.presentation import PresentationContext

from noctis.dicom.part10 import file_meta

T = TypeVar("T")


# --- process-wide settings -------------------------------------------------------------------


def configure() -> None:
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
    """Receive each C-STORE data set pynetdicom decodes into a Part 10 file under
    ``directory`` (chunked receive), never whole in memory."""
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


# --- class swaps -----------------------------------------------------------------------------


def become(instance: Any, cls: type[T]) -> T:
    """``instance`` (made by pynetdicom, not started yet) as an instance of ``cls``, a
    subclass of its class that adds methods and no instance layout of its own."""
    if not issubclass(cls, type(instance)):
        raise TypeError(f"{cls.__name__} is not a subclass of {type(instance).__name__}")
    instance.__class__ = cls
    return instance  # type: ignore[no-any-return]


# --- the association -------------------------------------------------------------------------


class AssociationHooks(Association):
    """pynetdicom's Association with its two private hooks under public names: a subclass
    overrides `serve_request` and `reactor_loop`, and calls them on ``super()`` for
    pynetdicom's own behaviour."""

    def _serve_request(self, msg: Any, context_id: int) -> None:
        self.serve_request(msg, context_id)

    def serve_request(self, msg: Any, context_id: int) -> None:
        """Serve one DIMSE request received on ``context_id`` (called by the reactor)."""
        super()._serve_request(msg, context_id)

    def _run_reactor(self) -> None:
        self.reactor_loop()

    def reactor_loop(self) -> None:
        """The association thread's loop once the association is established."""
        super()._run_reactor()


def accepted_context(assoc: Association, context_id: int) -> PresentationContext | None:
    """The presentation context accepted under ``context_id``, if any."""
    found = assoc._accepted_cx.get(context_id)
    return found if isinstance(found, PresentationContext) else None


def release_sent(assoc: Association) -> bool:
    """This side has asked to release the association (new requests are ignored then)."""
    return bool(assoc._sent_release)


def is_killed(assoc: Association) -> bool:
    """The association's reactor has been told to stop."""
    return bool(assoc._kill)


def mark_killed(assoc: Association) -> None:
    assoc._kill = True


def set_reactor_paused(assoc: Association, paused: bool) -> None:
    """Tell senders (pynetdicom's ``send_*``) whether the association's reactor stays off the
    message queue, so that responses to their requests reach them."""
    assoc._is_paused = paused


@contextmanager
def reactor_paused(assoc: Association) -> Iterator[None]:
    """While serving a request that sends requests of its own (C-GET's C-STOREs on the same
    association): what pynetdicom's ``_serve_request`` does around a service class."""
    assoc._is_paused = True
    try:
        yield
    finally:
        assoc._is_paused = False


def pass_checkpoint(assoc: Association) -> None:
    """The reactor's checkpoint on each pass of its loop, as pynetdicom's loop passes it:
    paused while a sender holds it."""
    assoc._is_paused = True
    assoc._reactor_checkpoint.wait()
    assoc._is_paused = False


@contextmanager
def paused_at_checkpoint(assoc: Association) -> Iterator[None]:
    """The reactor's checkpoint, as pynetdicom's loop passes it: paused, waiting while a sender
    holds it, and still paused for what the block does."""
    assoc._is_paused = True
    try:
        assoc._reactor_checkpoint.wait()
        yield
    finally:
        assoc._is_paused = False


def checkpoint_held(assoc: Association) -> bool:
    """A sender (``send_c_store`` and the like) holds the reactor's checkpoint: it is waiting
    for a response on the message queue."""
    return not assoc._reactor_checkpoint.is_set()


@contextmanager
def holding_checkpoint(assoc: Association, timeout: float = 5.0) -> Iterator[None]:
    """Hold the reactor of a requesting association, as pynetdicom's ``send_*`` do, so that
    responses stay on the message queue for the caller (tests send raw requests so)."""
    assoc._reactor_checkpoint.clear()
    try:
        deadline = time.monotonic() + timeout
        while not assoc._is_paused:  # pynetdicom's send_* poll it too: it has no event
            if time.monotonic() > deadline:
                raise TimeoutError(f"the association's reactor did not pause in {timeout} s")
            time.sleep(0.001)
        yield
    finally:
        assoc._reactor_checkpoint.set()


def signal_dul_ready(assoc: Association) -> None:
    """What pynetdicom's DUL loop does on each pass: the association may now send."""
    if not assoc._dul_ready.is_set():
        assoc._dul_ready.set()


# --- the DUL (upper layer) provider ----------------------------------------------------------


class DULHooks(DULServiceProvider):
    """pynetdicom's DUL provider, its private hooks and members under public names."""

    def _read_pdu_data(self) -> None:
        self.read_pdu()

    def read_pdu(self) -> None:
        """Read one PDU from the socket and queue its event and primitive (pynetdicom's)."""
        super()._read_pdu_data()

    def _is_transport_event(self) -> bool:
        return self.transport_event()

    def transport_event(self) -> bool:
        """Poll the socket; read a PDU if one is there (pynetdicom's)."""
        return bool(super()._is_transport_event())

    @property
    def kill_requested(self) -> bool:
        return bool(self._kill_thread)

    def request_kill(self) -> None:
        self._kill_thread = True

    def start_idle_timer(self) -> None:
        self._idle_timer.start()

    def restart_idle_timer(self) -> None:
        self._idle_timer.restart()

    def send_next_primitive(self) -> bool:
        """Send one primitive the association queued for the peer; False if none."""
        return bool(self._process_recv_primitive())

    def decode_pdu(self, data: bytes | bytearray) -> tuple[Any, str]:
        """A received PDU's primitive and its state machine event."""
        pdu, event = self._decode_pdu(data)
        return pdu, event

    def deliver_pdu(self, pdu: Any, event: str) -> None:
        """Hand a decoded PDU to the state machine, as pynetdicom's reader does."""
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def transport_connected(self) -> bool:
        transport = self.socket
        return transport is not None and bool(transport._is_connected)
