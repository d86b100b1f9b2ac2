"""C-MOVE and C-GET: send the stored instances, byte for byte, as C-STORE sub-operations.

pynetdicom's own Query/Retrieve service insists on a decoded `Dataset` per sub-operation and
re-encodes it: a deflated instance comes back with different bytes, and every instance is
decoded whole into memory. Here each stored object is staged to a spool file and sent from
there as it is (pynetdicom's chunked send), so what a peer retrieves is exactly what was
stored. Only when the peer refuses an instance's own transfer syntax is it converted (decoded
and sent uncompressed); if that is impossible the sub-operation fails.

`noctis.scp.association` routes C-MOVE and C-GET requests here instead of to pynetdicom's
service class; responses are sent on the request's presentation context.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import decode, encode
from sqlalchemy.exc import SQLAlchemyError

from noctis.core.facilities import Caller, Destination, move_destination
from noctis.index.query import Level, Match, MatchQuery, QueryError, find
from noctis.scp import status
from noctis.scp.contexts import GET_MODELS, MOVE_MODELS, requested_storage_contexts
from noctis.scp.identifiers import (
    IdentifierInvalid,
    IdentifierUndecodable,
    parse_identifier,
    require_unique_key,
)
from noctis.scp.metrics import get_metrics, result_class
from noctis.scp.requestor import requesting

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.presentation import PresentationContext

    from noctis.scp.scp_context import ScpContext

log = logging.getLogger(__name__)

_WARNING_STATUSES = frozenset({0x0001, 0xB000, 0xB006, 0xB007})


@dataclass
class Tally:
    """Sub-operation counts, as the responses report them."""

    total: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return self.total - self.completed - self.failed - self.warning

    def record(self, sop_instance_uid: str, code: int | None) -> None:
        if code == status.SUCCESS:
            self.completed += 1
        elif code in _WARNING_STATUSES:
            self.warning += 1
        else:
            self.failed += 1
            self.failed_uids.append(sop_instance_uid)

    def final_status(self) -> int:
        if not self.failed and not self.warning:
            return status.SUCCESS
        if self.failed == self.total:
            return status.UNABLE_TO_PERFORM_SUBOPERATIONS
        return status.SUBOPERATIONS_WARNING


class Responder:
    """Sends C-MOVE/C-GET responses for one request on its presentation context."""

    def __init__(
        self, assoc: Association, request: C_GET | C_MOVE, context: PresentationContext
    ) -> None:
        self.assoc = assoc
        self.request = request
        self.context = context
        self.service = "get" if isinstance(request, C_GET) else "move"
        self._context_id = int(context.context_id or 0)  # always set once negotiated

    def _response(self, code: int, tally: Tally | None, comment: str = "") -> C_GET | C_MOVE:
        response = C_GET() if self.service == "get" else C_MOVE()
        response.MessageIDBeingRespondedTo = self.request.MessageID
        response.AffectedSOPClassUID = self.request.AffectedSOPClassUID
        response.Status = code
        if comment:
            response.ErrorComment = status.with_comment(code, comment).ErrorComment
        if tally is not None:
            if code in (status.PENDING, status.CANCEL):
                response.NumberOfRemainingSuboperations = tally.remaining
            response.NumberOfCompletedSuboperations = tally.completed
            response.NumberOfFailedSuboperations = tally.failed
            response.NumberOfWarningSuboperations = tally.warning
            if code not in (status.PENDING, status.SUCCESS) and tally.failed_uids:
                identifier = Dataset()
                identifier.FailedSOPInstanceUIDList = tally.failed_uids
                response.Identifier = BytesIO(self._encode(identifier))
        return response

    def _encode(self, ds: Dataset) -> bytes:
        syntax = self.context.transfer_syntax[0]
        encoded = encode(ds, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
        return encoded or b""

    def pending(self, tally: Tally) -> None:
        self.assoc.dimse.send_msg(self._response(status.PENDING, tally), self._context_id)

    def final(self, code: int, tally: Tally | None = None, comment: str = "") -> None:
        response = self._response(code, tally, comment)
        self.assoc.dimse.send_msg(response, self._context_id)
        get_metrics().requests.labels(service=self.service, result=result_class(code)).inc()

    @property
    def cancelled(self) -> bool:
        return self.request.MessageID in self.assoc.dimse.cancel_req


def serve_retrieve(
    assoc: Association,
    request: C_GET | C_MOVE,
    context: PresentationContext,
    scp_context: ScpContext,
) -> None:
    """Answer one C-GET or C-MOVE request completely; never raises."""
    responder = Responder(assoc, request, context)
    try:
        _serve(responder, scp_context)
    except Exception:
        log.exception("C-%s failed", responder.service.upper())
        code = (
            status.GET_INTERNAL_ERROR if responder.service == "get" else status.MOVE_INTERNAL_ERROR
        )
        if assoc.is_established:
            responder.final(code, comment="internal error (logged)")


def _serve(responder: Responder, scp_context: ScpContext) -> None:
    service = responder.service
    caller = scp_context.access.allowed(responder.assoc, service)
    if caller is None:
        responder.final(status.NOT_AUTHORIZED, comment=f"this AE may not {service} here")
        return
    models = GET_MODELS if service == "get" else MOVE_MODELS
    undecodable = (
        status.GET_UNDECODABLE_IDENTIFIER
        if service == "get"
        else status.MOVE_UNDECODABLE_IDENTIFIER
    )
    try:
        identifier = _decode(responder)
        parsed = parse_identifier(
            identifier, models.get(str(responder.request.AffectedSOPClassUID), "STUDY")
        )
        require_unique_key(parsed)
    except IdentifierUndecodable as exc:
        responder.final(undecodable, comment=str(exc))
        return
    except IdentifierInvalid as exc:
        responder.final(status.DOES_NOT_MATCH_SOP_CLASS, comment=str(exc))
        return
    try:
        with scp_context.runtime.sessions() as session:
            destination = None
            if isinstance(responder.request, C_MOVE):
                destination = move_destination(
                    session, caller.facility_id, str(responder.request.MoveDestination or "")
                )
                if destination is None:
                    responder.final(
                        status.MOVE_DESTINATION_UNKNOWN,
                        comment=f"unknown destination {responder.request.MoveDestination}",
                    )
                    return
            query = MatchQuery(Level.IMAGE, parsed.filters, facility_ids=[caller.facility_id])
            matches = find(session, query)
    except QueryError as exc:
        responder.final(status.DOES_NOT_MATCH_SOP_CLASS, comment=str(exc))
        return
    except SQLAlchemyError as exc:
        log.warning("C-%s: index unavailable: %s", service.upper(), exc)
        responder.final(status.UNABLE_TO_CALCULATE_MATCHES, comment="index unavailable")
        return
    if len(matches) > status.MAX_SUBOPERATIONS:
        responder.final(status.OUT_OF_RESOURCES, comment="more than 65535 instances match")
        return
    tally = Tally(len(matches))
    if destination is None:
        _send_over(
            responder.assoc, responder, matches, tally, scp_context, caller, originator=False
        )
    else:
        _move_to(destination, responder, matches, tally, scp_context, caller)
    scp_context.audit.retrieved(
        responder.assoc,
        caller,
        service,
        (str(m.values["StudyInstanceUID"]) for m in matches),
        destination=destination.ae_title if destination is not None else None,
        completed=tally.completed,
        failed=tally.failed,
    )
    if responder.assoc.is_established:
        if responder.cancelled:
            responder.final(status.CANCEL, tally)
        else:
            responder.final(tally.final_status(), tally)


def _decode(responder: Responder) -> Dataset:
    syntax = responder.context.transfer_syntax[0]
    encoded = responder.request.Identifier
    if encoded is None:
        raise IdentifierUndecodable("the request has no identifier")
    try:
        identifier = decode(
            encoded,
            syntax.is_implicit_VR,
            syntax.is_little_endian,
            syntax.is_deflated,
        )
        for element in identifier:
            _ = element.value
    except Exception as exc:
        raise IdentifierUndecodable(f"identifier cannot be decoded: {exc}") from exc
    return identifier


def _move_to(
    destination: Destination,
    responder: Responder,
    matches: list[Match],
    tally: Tally,
    scp_context: ScpContext,
    caller: Caller,
) -> None:
    if not matches:
        return
    ae = responder.assoc.ae
    # Usually one association; more only if the matches need over 128 presentation contexts.
    for contexts in requested_storage_contexts(_pair(m) for m in matches):
        covered = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in contexts}
        batch = [m for m in matches if _pair(m) in covered]
        if not batch:
            continue
        store_assoc = requesting(
            ae.associate(
                destination.host,
                destination.port,
                contexts=contexts,
                ae_title=destination.ae_title,
                max_pdu=scp_context.runtime.settings.max_pdu_size,
            )
        )
        if not store_assoc.is_established:
            log.warning(
                "C-MOVE: %s at %s:%s refused or unreachable",
                destination.ae_title,
                destination.host,
                destination.port,
            )
            for match in batch:
                tally.record(str(match.values.get("SOPInstanceUID", "")), None)
            continue
        try:
            _send_over(store_assoc, responder, batch, tally, scp_context, caller, originator=True)
        finally:
            if store_assoc.is_established:
                store_assoc.release()
        if responder.cancelled or not responder.assoc.is_established:
            return


def _send_over(
    peer: Association,
    responder: Responder,
    matches: list[Match],
    tally: Tally,
    scp_context: ScpContext,
    caller: Caller,
    *,
    originator: bool,
) -> None:
    """C-STORE each match over ``peer``, with a pending response after each."""
    message_id = int(responder.request.MessageID or 0)
    for match in matches:
        if responder.cancelled or not responder.assoc.is_established:
            return
        sop_instance = str(match.values.get("SOPInstanceUID", ""))
        if not peer.is_established:
            tally.record(sop_instance, None)
            continue
        message_id = message_id % 0xFFFF + 1
        extra: dict[str, Any] = {}
        if originator:
            extra = {
                "originator_aet": caller.ae_title,
                "originator_id": responder.request.MessageID,
            }
        code = _store_one(peer, match, scp_context, message_id, extra)
        tally.record(sop_instance, code)
        responder.pending(tally)


def _store_one(
    peer: Association, match: Match, scp_context: ScpContext, message_id: int, extra: dict[str, Any]
) -> int | None:
    """The peer's C-STORE status for one instance, or None if it could not be sent."""
    sop_class = _sop_class(match)
    syntax = match.transfer_syntax_uid or ""
    try:
        with _staged(scp_context, match) as path:
            if _accepts(peer, sop_class, syntax):
                answer = peer.send_c_store(path, msg_id=message_id, **extra)
            else:
                converted = _converted(path, peer, sop_class)
                if converted is None:
                    log.info("peer accepts no syntax for %s stored as %s", sop_class, syntax)
                    return None
                answer = peer.send_c_store(converted, msg_id=message_id, **extra)
    except Exception as exc:
        log.warning("C-STORE sub-operation for %s failed: %s", match.object_key, exc)
        return None
    return int(answer.Status) if "Status" in answer else None


def _accepts(peer: Association, sop_class: str, syntax: str) -> bool:
    return any(
        cx.abstract_syntax == sop_class and cx.transfer_syntax[0] == syntax and cx.as_scu
        for cx in peer.accepted_contexts
    )


def _converted(path: Path, peer: Association, sop_class: str) -> Dataset | None:
    """The instance decoded for an uncompressed context the peer accepted, if possible."""
    offered = {
        str(cx.transfer_syntax[0])
        for cx in peer.accepted_contexts
        if cx.abstract_syntax == sop_class and cx.as_scu
    }
    targets = [ts for ts in offered if UID(ts).is_little_endian and not UID(ts).is_compressed]
    if not targets:
        return None
    ds = dcmread(path)
    stored = UID(ds.file_meta.TransferSyntaxUID)
    if stored == ExplicitVRBigEndian:
        return None  # pydicom cannot byte-swap raw pixel data: refuse rather than corrupt
    if stored.is_compressed:
        # Decoding adds no loss of its own, so the instance keeps its SOP Instance UID.
        ds.decompress(generate_instance_uid=False)
    return ds


@contextmanager
def _staged(scp_context: ScpContext, match: Match) -> Iterator[Path]:
    """The stored object copied to a spool file, removed afterwards."""
    if not match.object_key:
        raise FileNotFoundError("match has no object")
    with tempfile.NamedTemporaryFile(
        dir=scp_context.spool_dir, prefix="retrieve-", suffix=".dcm", delete=False
    ) as handle:
        path = Path(handle.name)
        try:
            for chunk in scp_context.runtime.store.iter_chunks(match.object_key):
                handle.write(chunk)
            if handle.tell() % 2:
                # Only a deflated data set can have an odd length (some writers forget the
                # pad byte PS3.5 A.5 asks for); PDVs must be even, and dcmtk aborts otherwise.
                handle.write(b"\x00")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _sop_class(match: Match) -> str:
    return str(match.values.get("SOPClassUID", ""))


def _pair(match: Match) -> tuple[str, str]:
    return _sop_class(match), match.transfer_syntax_uid or ""
