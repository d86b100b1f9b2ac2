"""Event-driven reactors for pynetdicom's two threads per association.

pynetdicom 3.0 polls: the DUL thread (socket <-> state machine) sleeps 1 ms whenever its socket
and queues were idle, and the association thread (DIMSE messages -> handlers) sleeps 1 ms
before every look at its queues. Each C-STORE waits on both twice, about 1.5 ms of a small
instance's 7 ms round trip (measured with dcmtk's storescu; pynetdicom's own TODO says as
much). Here both threads sleep until there is work instead:

- the DUL thread waits in ``select`` on the peer's socket and a wake-up pipe, which every
  primitive put on its ``to_provider_queue`` (a response to send, a release, an abort) writes
  to;
- the association thread waits on an Event that the DIMSE message queue and the DUL's
  ``to_user_queue`` (release and abort requests from the peer) set when something arrives.

The DUL thread also reads each PDU whole into one buffer (pynetdicom reads 4 KiB at a time),
small ones with what follows them read ahead (a command and its data set in one call), skips
pynetdicom's zero-timeout ``select`` when its own wait just saw the socket readable, and offers
every P-DATA-TF PDU of an established association to a `DirectStore` first
(`noctis.scp.fast.direct_store`), which takes C-STORE requests without the state machine. Fewer
system calls mean fewer hand-offs of the GIL between associations.

Both still wake every ``IDLE_WAIT`` seconds to check what pynetdicom checks on each pass:
ARTIM and network (idle) timeouts, the other thread being alive. A kill request wakes the DUL
thread at once. Each loop otherwise does what pynetdicom's does, in the same order; what it
relies on of pynetdicom's internals goes through `noctis.scp.fast.compat`.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import select
import ssl
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pynetdicom import evt
from pynetdicom.pdu import A_ABORT_RQ

from noctis.scp.fast import compat
from noctis.scp.fast.command_set import P_DATA_TF, PDU_HEADER

if TYPE_CHECKING:
    from noctis.scp.fast.direct_store import DirectStore

log = logging.getLogger(__name__)

_PDU_TYPES = frozenset(range(0x01, 0x08))

# A read of less than this from the peer asks for this much more: small PDUs that arrived
# together are then taken off the socket in one call.
READ_AHEAD = 64 << 10

# Bytes other threads may have handed over for sending before they wait (`queue_pdus`).
OUTGOING_LIMIT = 1 << 20

# Seconds between timer checks while nothing happens: an idle association costs two wake-ups
# per IDLE_WAIT (measured: 0.5% of a core at 50 ms, 2% at 5 ms), and its timeouts are checked
# up to that much later than they expire.
IDLE_WAIT = 0.05


class SignallingQueue(queue.Queue):  # type: ignore[type-arg]
    """A queue that calls ``signal`` after every put (under the queue's lock)."""

    def __init__(self, signal: Callable[[], None]) -> None:
        super().__init__()
        self._signal = signal

    def _put(self, item: Any) -> None:
        super()._put(item)
        self._signal()


class WakeUpPipe:
    """A pipe another thread writes a byte to, to end a ``select`` early."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self._closed = False
        # A wake-up racing the close must not write to the closed descriptor: its number may
        # already belong to another file or socket.
        self._lock = threading.Lock()

    def wake(self) -> None:
        with self._lock:
            if self._closed:
                return
            with contextlib.suppress(BlockingIOError, OSError):  # full: a wake-up is pending
                os.write(self.write_fd, b"\0")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self.read_fd, 4096):
                pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self.read_fd, self.write_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)


class EventDrivenDUL(compat.DULHooks):
    """pynetdicom's DUL provider, waiting for its socket or its queue instead of sleeping,
    reading PDUs whole (not 4 KiB at a time) and giving P-DATA-TF PDUs to a `DirectStore`
    first."""

    _wake_up: WakeUpPipe
    _direct_store: DirectStore | None = None
    _pending: bytearray  # bytes read ahead of the PDU being read
    _readable = False  # the last wait saw the peer's socket readable
    # Encoded P-DATA-TF PDUs other threads hand over (`queue_pdus`), and their total size.
    _outgoing: collections.deque[bytes]
    _outgoing_size = 0
    _outgoing_room: threading.Condition

    def install_wake_up(self, wake_association: Callable[[], None]) -> None:
        """Before the thread starts: queues that wake this thread and the association's."""
        self._wake_up = WakeUpPipe()
        self._pending = bytearray()
        self._outgoing = collections.deque()
        self._outgoing_room = threading.Condition()
        self.to_provider_queue = SignallingQueue(self._wake_up.wake)
        self.to_user_queue = SignallingQueue(wake_association)

    def install_direct_store(self, direct_store: DirectStore) -> None:
        """Before the thread starts: who takes C-STORE requests off the socket."""
        self._direct_store = direct_store

    def send_bytes(self, data: bytes) -> None:
        """Send an encoded PDU from this thread (the only one that writes to the socket)."""
        try:
            self._raw_socket().sendall(data)
        except OSError:
            self.event_queue.put("Evt17")  # transport connection closed

    def queue_pdus(self, data: bytes) -> bool:
        """Hand encoded P-DATA-TF PDUs to this thread to send, in order (from the association
        thread: C-FIND responses). Waits while OUTGOING_LIMIT bytes are still unsent (a slow
        reader); False if the association is no longer established (nothing is sent)."""
        with self._outgoing_room:
            while self._outgoing_size > OUTGOING_LIMIT:
                if not self.is_alive() or not self.assoc.is_established:
                    return False
                self._outgoing_room.wait(IDLE_WAIT)
            if not self.is_alive() or not self.assoc.is_established:
                return False
            self._outgoing.append(data)
            self._outgoing_size += len(data)
        self._wake_up.wake()
        return True

    def _send_outgoing(self) -> None:
        with self._outgoing_room:
            data = b"".join(self._outgoing)
            self._outgoing.clear()
            self._outgoing_size = 0
            self._outgoing_room.notify_all()
        if self.state_machine.current_state == "Sta6":
            self.send_bytes(data)

    def read_pdu(self) -> None:
        """One PDU from the socket: a direct store's, or decoded for the state machine (what
        pynetdicom's does, with the same events for a closed connection or a bad PDU)."""
        try:
            header = self._receive_exactly(PDU_HEADER.size)
            pdu_type, _, length = PDU_HEADER.unpack(header)
            if pdu_type not in _PDU_TYPES:
                log.error("unknown PDU type 0x%02X received", pdu_type)
                self.event_queue.put("Evt19")  # unrecognised or invalid PDU
                return
            body = self._receive_exactly(length)
        except (OSError, ConnectionError):
            self.event_queue.put("Evt17")  # transport connection closed mid-PDU
            return
        direct = self._direct_store
        if (
            pdu_type == P_DATA_TF
            and direct is not None
            and self.state_machine.current_state == "Sta6"
        ):
            rest = direct.take(memoryview(body))
            if rest is None:
                return
            if rest:  # a message for pynetdicom after a direct store, in the same PDU
                header = PDU_HEADER.pack(P_DATA_TF, 0, length - rest)
                body = body[rest:]
        try:
            pdu, event = self.decode_pdu(header + body)
        except Exception:
            log.exception("undecodable PDU received")
            self.event_queue.put("Evt19")
            return
        self.deliver_pdu(pdu, event)

    def _receive_exactly(self, length: int) -> bytearray:
        """``length`` bytes from the peer: what was read ahead first, then the socket. A read
        for less than READ_AHEAD asks for that much more, so the small PDUs of one message
        (a command, its data set, the next command) come off the socket in one call."""
        pending = self._pending
        if len(pending) >= length:
            taken = pending[:length]
            del pending[:length]
            return taken
        sock = self._raw_socket()
        size = length + READ_AHEAD if length < READ_AHEAD else length
        buffer = bytearray(size)
        received = len(pending)
        buffer[:received] = pending
        pending.clear()
        with memoryview(buffer) as view:
            while received < length:
                count = sock.recv_into(view[received:], size - received)
                if not count:
                    raise ConnectionError(f"connection closed after {received} of {length} bytes")
                received += count
        if received > length:
            pending += buffer[length:received]
        if size > length:
            del buffer[length:]
        return buffer

    def transport_event(self) -> bool:
        """pynetdicom's, without its zero-timeout ``select`` when bytes were read ahead or the
        last wait saw the socket readable."""
        if self._pending or self._readable:
            self._readable = False
            self.read_pdu()
            return True
        return super().transport_event()

    def _raw_socket(self) -> Any:
        transport = self.socket
        if transport is None or transport.socket is None:
            raise ConnectionError("the association's socket is closed")
        return transport.socket

    def kill_dul(self) -> None:
        self.request_kill()
        self._wake_up.wake()

    def stop_dul(self) -> bool:
        """pynetdicom's: stop the reactor if the connection is closed (Sta1), and wait for it."""
        if self.state_machine.current_state != "Sta1":
            return False
        self.kill_dul()
        if threading.current_thread() is not self:
            self.join()
        return True

    def run(self) -> None:
        # Thread.__init__ captured the bound pynetdicom run_reactor before the class changed.
        self.run_reactor()

    def run_reactor(self) -> None:
        try:
            self._react()
        finally:
            with self._outgoing_room:  # nobody sends them now: let a waiting sender go
                self._outgoing.clear()
                self._outgoing_size = 0
                self._outgoing_room.notify_all()
            self._wake_up.close()
            if self._direct_store is not None:
                self._direct_store.close()

    def _react(self) -> None:
        # pynetdicom's run_reactor, with the idle sleep replaced by _wait_for_work.
        self.start_idle_timer()
        while True:
            compat.signal_dul_ready(self.assoc)
            if self.kill_requested:
                return
            if self._outgoing:
                self._send_outgoing()
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                # One primitive to send or one PDU received per pass, as pynetdicom does.
                if self.send_next_primitive():
                    pass
                elif self.transport_event():
                    self.restart_idle_timer()
            except Exception:
                log.exception("DICOM upper layer failed; aborting the association")
                self._abort_hard()
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                self._wait_for_work()
                continue
            self.state_machine.do_action(event)

    def _wait_for_work(self) -> None:
        if self.to_provider_queue.qsize() or self._pending or self._outgoing:
            return
        transport = self.socket
        sock = transport.socket if transport is not None else None
        watched: list[Any] = [self._wake_up.read_fd]
        if sock is not None and self.transport_connected():
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                return  # decrypted bytes waiting that select cannot see
            watched.append(sock)
        try:
            readable, _, _ = select.select(watched, [], [], IDLE_WAIT)
        except (OSError, ValueError):
            return  # the socket closed under us: the next pass reports it (Evt17)
        if self._wake_up.read_fd in readable:
            self._wake_up.drain()
        self._readable = sock is not None and sock in readable

    def _abort_hard(self) -> None:
        """What pynetdicom does when its reactor raises: A-ABORT past the state machine."""
        abort = A_ABORT_RQ()
        abort.source = 0x02
        abort.reason_diagnostic = 0x00
        with contextlib.suppress(Exception):
            if self.socket is not None:
                self.socket.send(abort.encode())
        assoc = self.assoc
        assoc.is_aborted = True
        assoc.is_established = False
        compat.mark_killed(assoc)
        self.request_kill()


def serve_until_done(assoc: Any, wake: threading.Event) -> None:
    """The association's reactor (pynetdicom's ``Association._run_reactor``), waiting on
    ``wake`` (set when a DIMSE message or an ACSE primitive arrives) instead of sleeping."""
    compat.set_reactor_paused(assoc, False)
    while not compat.is_killed(assoc):
        wake.wait(IDLE_WAIT)
        wake.clear()  # before looking: a put after this sets it again

        # Requests the handlers make themselves (C-GET sub-operations) pause the reactor.
        compat.pass_checkpoint(assoc)

        context_id, message = assoc.dimse.get_msg(block=False)
        if message:
            assoc.serve_request(message, context_id)
            wake.set()  # more may have queued while serving: look again at once

        if assoc.is_established and assoc.acse.is_release_requested():
            assoc.acse.send_release(is_response=True)
            assoc.is_released = True
            assoc.is_established = False
            evt.trigger(assoc, evt.EVT_RELEASED, {})
            assoc.kill()
            return

        if assoc.acse.is_aborted():
            assoc.dul.receive_pdu(wait=False)  # so EVT_ACSE_RECV fires for subscribers
            assoc.is_aborted = True
            assoc.is_established = False
            evt.trigger(assoc, evt.EVT_ABORTED, {})
            assoc.kill()
            return

        if not assoc.dul.is_alive():
            assoc.kill()
            return

        if assoc.dul.idle_timer_expired():
            log.warning(
                "association with %s idle for %s s (network timeout): %s",
                assoc.requestor.ae_title,
                assoc.network_timeout,
                assoc.network_timeout_response,
            )
            if assoc.network_timeout_response == "A-RELEASE":
                with compat.paused_at_checkpoint(assoc):
                    assoc.release()
            else:
                assoc.abort()
            assoc.kill()
            return
