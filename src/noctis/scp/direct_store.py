"""C-STORE requests received straight off the socket, in the association's DUL thread.

Through pynetdicom, each P-DATA-TF PDU of a C-STORE goes through its state machine and DIMSE
decoder, the finished message through a queue to the association thread, and the response
back through another queue to the DUL thread that sends it: about 1.5 ms of thread hand-offs
and pydicom encoding per message, more than the archive's own work for a small instance.

Here the DUL thread (`noctis.scp.reactor.EventDrivenDUL`) hands every P-DATA-TF PDU of an
established association to `DirectStore.take` first. A PDU whose first item is a complete
C-STORE-RQ command on a storage context we accept as SCP starts a direct store: the data set
fragments are written to a spool file as they arrive (after the File Meta built from the
request and the context's transfer syntax, as pynetdicom would; in memory, up to a limit, for a
store that copies it anyway), the archive's C-STORE handler
(`noctis.scp.store.store_received`) runs, and the C-STORE-RSP goes out on the socket from the
same thread. Everything else (other commands, a command split over several fragments, any
message pynetdicom is already assembling) is left to pynetdicom, untouched, so the two never
share a message. The peer cannot tell the difference: same statuses, same response bytes.

A data set that cannot be spooled (disk full) is still read to its end and answered with
A700; a PDU that breaks the fragment rules (PS3.8 9.3.5) aborts the association, as
pynetdicom's would; a partial spool file is removed when the association ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from noctis.core.ingest import Received
from noctis.dicom.part10 import part10_head
from noctis.scp import status
from noctis.scp.command_set import (
    PDV_HEADER,
    StoreRequest,
    command_pdus,
    read_store_request,
    store_response,
)
from noctis.scp.store import store_received

if TYPE_CHECKING:
    from noctis.scp.scp_context import ScpContext

log = logging.getLogger(__name__)

_COMMAND = 0x01  # message control header bits
_LAST = 0x02

SPOOL_FAILED = status.Answer(status.OUT_OF_RESOURCES, "could not spool the data set")
# A data set for a store that copies it (S3) stays in memory up to this size; a bigger one
# goes on to an unnamed file in the spool directory. With max_associations at 32, the
# associations' spools hold at most 128 MiB of memory.
IN_MEMORY_LIMIT = 4 << 20


class FragmentError(Exception):
    """The peer broke the P-DATA fragment rules; the association must be aborted."""


@dataclass
class _Incoming:
    context_id: int
    context_sop_class: str  # the abstract syntax the context was negotiated for
    request: StoreRequest
    path: Path | None
    spool: IO[bytes] | None  # None once spooling failed: the rest is read and dropped
    # Of the data set only: the File Meta is ours, and duplicates are compared on the data set.
    digest: Any = field(default_factory=hashlib.sha256)
    size: int = 0

    def write(self, data: bytes | memoryview, *, hashed: bool = True) -> None:
        if self.spool is None:
            raise OSError("the spool file is closed")
        self.spool.write(data)
        if hashed:
            self.digest.update(data)
        self.size += len(data)


class DirectStore:
    """One association's direct C-STORE receiver; used by its DUL thread only."""

    def __init__(self, assoc: Any, scp_context: ScpContext, send: Callable[[bytes], None]) -> None:
        self._assoc = assoc
        self._runtime = scp_context
        self._send = send
        self._incoming: _Incoming | None = None
        # context ID -> (SOP class, transfer syntax), if a storage context we serve
        self._syntaxes: dict[int, tuple[str, str] | None] = {}
        # The next data set's spool file, made after a response went out, while the peer
        # readies its next request: creating a file waits on the spool directory and on the
        # journal commits of other stores' fsyncs (0.1-0.2 ms measured).
        self._prepared: tuple[int, Path] | None = None

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
        """The association ended: drop a data set still being received, and the spool file
        made for the next one."""
        incoming, self._incoming = self._incoming, None
        if incoming is not None:
            _discard(incoming)
        prepared, self._prepared = self._prepared, None
        if prepared is not None:
            _remove_spool_file(*prepared)

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
        """A spool holding the Part 10 head; without one if the spool cannot be written.

        For a store that adopts files (links them into place), a named file in the spool
        directory; for one that copies the data (S3), memory, or an unnamed file in the spool
        directory beyond IN_MEMORY_LIMIT: no file to create, write, read back and remove.
        """
        scp_context = self._runtime
        path: Path | None = None
        spool: IO[bytes]
        try:
            if scp_context.runtime.store.adopts_files:
                prepared, self._prepared = self._prepared, None
                fd, path = prepared if prepared is not None else _new_spool_file(scp_context)
                # Buffered (a data set fragment is written through whole), and readable:
                # ingest reads the header through this handle.
                spool = os.fdopen(fd, "w+b")
            else:
                spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (closed by _store)
                    max_size=IN_MEMORY_LIMIT, dir=scp_context.spool_dir
                )
        except OSError as exc:
            log.error("cannot create a C-STORE spool file in %s: %s", scp_context.spool_dir, exc)
            return _Incoming(context_id, sop_class, request, None, None)
        incoming = _Incoming(context_id, sop_class, request, path, spool)
        try:
            head = part10_head(request.sop_class_uid, request.sop_instance_uid, syntax)
            incoming.write(head, hashed=False)
        except OSError as exc:
            log.error("cannot spool C-STORE data set: %s", exc)
            _discard(incoming)
            incoming.spool = None
        return incoming

    def _receive(self, context_id: int, control: int, data: memoryview) -> None:
        incoming = self._incoming
        assert incoming is not None
        if context_id != incoming.context_id or control & _COMMAND:
            raise FragmentError(
                f"PDV on context {context_id} (control 0x{control:02X}) inside a data set "
                f"on context {incoming.context_id}"
            )
        if incoming.spool is not None:
            try:
                incoming.write(data)
            except OSError as exc:
                log.error("cannot spool C-STORE data set: %s", exc)
                _discard(incoming)
                incoming.spool = None
        if control & _LAST:
            self._incoming = None
            self._answer(incoming)

    def _answer(self, incoming: _Incoming) -> None:
        request = incoming.request
        try:
            if incoming.spool is None:
                answer = SPOOL_FAILED
            else:
                answer = self._store(incoming, incoming.spool, incoming.path, request)
            if not self._assoc.is_established:
                return  # aborted or released while storing: nobody to answer
            comment = status.error_comment(answer.comment)
            response = store_response(request, answer.status, comment)
            peer_max_pdu = int(self._assoc.requestor.maximum_length or 0)
            self._send(command_pdus(incoming.context_id, response, peer_max_pdu))
        finally:
            # After the answer, while the peer readies its next request: what would otherwise
            # delay the answer.
            if incoming.path is not None:
                incoming.path.unlink(missing_ok=True)
        if self._runtime.runtime.store.adopts_files:
            try:
                self._prepared = _new_spool_file(self._runtime)
            except OSError:
                self._prepared = None  # the next request tries again; A700 if it fails

    def _store(
        self, incoming: _Incoming, spool: IO[bytes], path: Path | None, request: StoreRequest
    ) -> status.Answer:
        scp_context = self._runtime
        try:
            spool.flush()
            return store_received(
                scp_context,
                self._assoc,
                request.sop_class_uid,
                request.sop_instance_uid,
                path,
                Received(incoming.size, incoming.digest.hexdigest(), spool),
                context_sop_class=incoming.context_sop_class,
            )
        except OSError as exc:
            log.error("cannot spool C-STORE data set: %s", exc)
            return SPOOL_FAILED
        finally:
            with contextlib.suppress(OSError):
                spool.close()

    def _storage_context(self, context_id: int) -> tuple[str, str] | None:
        """The SOP class and transfer syntax of ``context_id`` if it is a storage context
        we serve."""
        if context_id not in self._syntaxes:
            context = self._assoc._accepted_cx.get(context_id)
            found = None
            if (
                context is not None
                and context.as_scp
                and uid_to_service_class(str(context.abstract_syntax)) is StorageServiceClass
            ):
                found = (str(context.abstract_syntax), str(context.transfer_syntax[0]))
            self._syntaxes[context_id] = found
        return self._syntaxes[context_id]


def _new_spool_file(scp_context: ScpContext) -> tuple[int, Path]:
    fd, name = tempfile.mkstemp(dir=scp_context.spool_dir, prefix="incoming-")
    return fd, Path(name)


def _remove_spool_file(fd: int, path: Path) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
    path.unlink(missing_ok=True)


def _discard(incoming: _Incoming) -> None:
    if incoming.spool is not None:
        with contextlib.suppress(OSError):
            incoming.spool.close()
    if incoming.path is not None:
        incoming.path.unlink(missing_ok=True)
