"""C-STORE requests received straight off the socket, in the association's DUL thread.

Through pynetdicom, each P-DATA-TF PDU of a C-STORE goes through its state machine and DIMSE
decoder, the finished message through a queue to the association thread, and the response
back through another queue to the DUL thread that sends it: about 1.5 ms of thread hand-offs
and pydicom encoding per message, more than the archive's own work for a small instance.

Here the DUL thread (`noctis.scp.fast.reactor.EventDrivenDUL`) hands every P-DATA-TF PDU of an
established association to `DirectStore.take` first. A PDU whose first item is a complete
C-STORE-RQ command on a storage context we accept as SCP starts a direct store: the data set
fragments are written into the object store's writer for incoming data as they arrive
(`noctis.storage.incoming`, after the File Meta built from the request and the context's
transfer syntax, as pynetdicom would), the archive's C-STORE handler
(`noctis.scp.store.store_received`) runs, and the C-STORE-RSP goes out on the socket from the
same thread. Everything else (other commands, a command split over several fragments, any
message pynetdicom is already assembling) is left to pynetdicom, untouched, so the two never
share a message. The peer cannot tell the difference: same statuses, same response bytes.

A data set that cannot be spooled (disk full) is still read to its end and answered with
A700; a PDU that breaks the fragment rules (PS3.8 9.3.5) aborts the association, as
pynetdicom's would; a partial data set is discarded when the association ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from noctis.dicom.part10 import part10_head
from noctis.scp import status
from noctis.scp.fast import compat
from noctis.scp.fast.command_set import (
    PDV_HEADER,
    StoreRequest,
    command_pdus,
    read_store_request,
    store_response,
)
from noctis.scp.store import store_received

if TYPE_CHECKING:
    from noctis.scp.scp_context import ScpContext
    from noctis.storage import IncomingObject

log = logging.getLogger(__name__)

_COMMAND = 0x01  # message control header bits
_LAST = 0x02

SPOOL_FAILED = status.Answer(status.OUT_OF_RESOURCES, "could not spool the data set")


class FragmentError(Exception):
    """The peer broke the P-DATA fragment rules; the association must be aborted."""


@dataclass
class _Incoming:
    context_id: int
    context_sop_class: str  # the abstract syntax the context was negotiated for
    request: StoreRequest
    data: IncomingObject | None  # None once spooling failed: the rest is read and dropped

    def write(self, data: bytes | memoryview) -> None:
        """Spool ``data``; on failure, drop the data set and read the rest for nothing."""
        if self.data is None:
            return
        try:
            self.data.write(data)
        except OSError as exc:
            log.error("cannot spool C-STORE data set: %s", exc)
            self.discard()

    def discard(self) -> None:
        data, self.data = self.data, None
        if data is not None:
            data.close()


class DirectStore:
    """One association's direct C-STORE receiver; used by its DUL thread only."""

    def __init__(self, assoc: Any, scp_context: ScpContext, send: Callable[[bytes], None]) -> None:
        self._assoc = assoc
        self._scp_context = scp_context
        self._send = send
        self._incoming: _Incoming | None = None
        # context ID -> (SOP class, transfer syntax), if a storage context we serve
        self._syntaxes: dict[int, tuple[str, str] | None] = {}
        # The next data set's incoming object, made after a response went out, while the peer
        # readies its next request: creating a spool file waits on the spool directory and on
        # the journal commits of other stores' fsyncs (0.1-0.2 ms measured).
        self._prepared: IncomingObject | None = None

    def take(self, items: memoryview) -> int | None:
        """Consume the PDV items of one P-DATA-TF PDU (its body, after the 6-byte header).

        Returns None if every item was taken, or the offset of the first item that is
        pynetdicom's: 0 for the whole PDU, more if a direct store ended before it.
        """
        offset, end = 0, len(items)
        while offset < end:
            if end - offset < PDV_HEADER.size:
                raise FragmentError("truncated PDV item")
            length, context_id, control = PDV_HEADER.unpack_from(items, offset)
            if length < 2 or length > end - offset - 4:
                raise FragmentError("PDV item length overruns its PDU")
            data = items[offset + PDV_HEADER.size : offset + 4 + length]
            if self._incoming is None:
                if not self._start(context_id, control, data):
                    return offset
            else:
                self._receive(context_id, control, data)
            offset += 4 + length
        return None

    def close(self) -> None:
        """The association ended: drop a data set still being received, and the incoming
        object made for the next one."""
        incoming, self._incoming = self._incoming, None
        if incoming is not None:
            incoming.discard()
        prepared, self._prepared = self._prepared, None
        if prepared is not None:
            prepared.close()

    # --- one message --------------------------------------------------------------------

    def _start(self, context_id: int, control: int, command: memoryview) -> bool:
        if control != _COMMAND | _LAST or self._assoc.dimse.message is not None:
            return False  # a split command, or pynetdicom is mid-message: all pynetdicom's
        context = self._storage_context(context_id)
        if context is None:
            return False
        request = read_store_request(command)
        if request is None:
            return False
        self._incoming = self._open_spool(context_id, request, *context)
        return True

    def _open_spool(
        self, context_id: int, request: StoreRequest, sop_class: str, syntax: str
    ) -> _Incoming:
        """An incoming object holding the Part 10 head; without one if it cannot be written."""
        prepared, self._prepared = self._prepared, None
        try:
            data = prepared if prepared is not None else self._scp_context.runtime.store.incoming()
        except OSError as exc:
            log.error("cannot spool a C-STORE data set: %s", exc)
            return _Incoming(context_id, sop_class, request, None)
        incoming = _Incoming(context_id, sop_class, request, data)
        incoming.write(part10_head(request.sop_class_uid, request.sop_instance_uid, syntax))
        return incoming

    def _receive(self, context_id: int, control: int, data: memoryview) -> None:
        incoming = self._incoming
        assert incoming is not None
        if context_id != incoming.context_id or control & _COMMAND:
            raise FragmentError(
                f"PDV on context {context_id} (control 0x{control:02X}) inside a data set "
                f"on context {incoming.context_id}"
            )
        incoming.write(data)
        if control & _LAST:
            self._incoming = None
            self._answer(incoming)

    def _answer(self, incoming: _Incoming) -> None:
        request = incoming.request
        try:
            answer = self._store(incoming)
            if not self._assoc.is_established:
                return  # aborted or released while storing: nobody to answer
            comment = status.error_comment(answer.comment)
            response = store_response(request, answer.status, comment)
            peer_max_pdu = int(self._assoc.requestor.maximum_length or 0)
            self._send(command_pdus(incoming.context_id, response, peer_max_pdu))
        finally:
            # After the answer, while the peer readies its next request: what would otherwise
            # delay the answer.
            incoming.discard()
        try:
            self._prepared = self._scp_context.runtime.store.incoming()
        except OSError:
            self._prepared = None  # the next request tries again; A700 if it fails

    def _store(self, incoming: _Incoming) -> status.Answer:
        data, request = incoming.data, incoming.request
        if data is None:
            return SPOOL_FAILED
        try:
            data.finish()
        except OSError as exc:
            log.error("cannot spool C-STORE data set: %s", exc)
            return SPOOL_FAILED
        return store_received(
            self._scp_context,
            self._assoc,
            request.sop_class_uid,
            request.sop_instance_uid,
            data,
            context_sop_class=incoming.context_sop_class,
        )

    def _storage_context(self, context_id: int) -> tuple[str, str] | None:
        """The SOP class and transfer syntax of ``context_id`` if it is a storage context
        we serve."""
        if context_id not in self._syntaxes:
            context = compat.accepted_context(self._assoc, context_id)
            found = None
            if (
                context is not None
                and context.as_scp
                and uid_to_service_class(str(context.abstract_syntax)) is StorageServiceClass
            ):
                found = (str(context.abstract_syntax), str(context.transfer_syntax[0]))
            self._syntaxes[context_id] = found
        return self._syntaxes[context_id]
