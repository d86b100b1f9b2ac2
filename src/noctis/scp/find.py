"""C-FIND for Patient Root and Study Root, at PATIENT, STUDY, SERIES and IMAGE level.

Matching is the index's (`noctis.index.query.find`, shared with QIDO-RS), always limited to
the caller's facility. `answers` yields each (status, identifier) to send.

`serve_find` sends them for a C-FIND-RQ the association hands over (`AcceptedAssociation`):
each identifier is written directly (`noctis.dicom.plain_data_set`; pydicom for what is not
plain), its command set by `noctis.scp.fast.command_set`, and the PDUs go to the association's DUL
thread in batches of about BATCH_BYTES. Through pynetdicom
each response was a message of its own (a pydicom command set, a trip through the state
machine and a thread hand-off), 2.7 ms a match on the test machine, so 206 matches took 550
ms. A C-CANCEL-RQ is looked for before every response. `handle_find` is the EVT_C_FIND
handler for any request pynetdicom keeps (it yields the same answers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode
from sqlalchemy.exc import SQLAlchemyError

from noctis.dicom.plain_data_set import Element, encode_plain
from noctis.index.query import Match, QueryError, find
from noctis.scp import status
from noctis.scp.contexts import FIND_MODELS
from noctis.scp.fast.command_set import command_pdus, data_set_pdus, find_response
from noctis.scp.identifiers import (
    IdentifierInvalid,
    IdentifierUndecodable,
    ParsedIdentifier,
    decode_identifier,
    decoded,
    identifier_dataset,
    parse_identifier,
    response_elements,
)
from noctis.scp.metrics import get_metrics, result_class

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.dimse_primitives import C_FIND
    from pynetdicom.events import Event
    from pynetdicom.presentation import PresentationContext

    from noctis.scp.scp_context import ScpContext

log = logging.getLogger(__name__)

FindResponse = tuple[int | Dataset, Dataset | None]
Answer = tuple[int | Dataset, list[Element] | None]  # a status, and a match's elements
# Encoded responses handed to the DUL thread at once: one hand-off per ~50 matches.
BATCH_BYTES = 16 << 10


def handle_find(event: Event, scp_context: ScpContext) -> Iterator[FindResponse]:
    """EVT_C_FIND handler (requests the association does not serve itself)."""
    request = FindRequest(
        event.assoc,
        lambda: decode_identifier(event),
        str(event.request.AffectedSOPClassUID),
        lambda: bool(event.is_cancelled) or _cancelled_early(event),
    )
    for code, elements in answers(request, scp_context):
        yield code, identifier_dataset(elements) if elements is not None else None


def _cancelled_early(event: Event) -> bool:
    """A C-CANCEL-RQ came before pynetdicom started serving the request (it forgets those;
    `noctis.scp.fast.association.AcceptedAssociation` remembers them)."""
    return event.request.MessageID in getattr(event.assoc, "cancelled_early", ())


def serve_find(
    assoc: Association,
    request: C_FIND,
    context: PresentationContext,
    scp_context: ScpContext,
    answers_of: Callable[[FindRequest, ScpContext], Iterator[Answer | FindResponse]] | None = None,
) -> None:
    """Answer a C-FIND-RQ on ``context``: every response encoded here and sent in batches.
    ``answers_of``: where the answers come from (default: the query/retrieve models'
    `answers`; the Modality Worklist's give data sets)."""
    syntax = context.transfer_syntax[0]
    context_id = int(context.context_id or 0)
    message_id = int(request.MessageID or 0)
    sop_class = str(request.AffectedSOPClassUID)
    peer_max_pdu = int(assoc.requestor.maximum_length or 0)
    dul: Any = assoc.dul

    def identifier() -> Dataset:
        raw = request.Identifier
        if raw is None:
            raise IdentifierUndecodable("the request has no identifier")
        raw.seek(0)
        try:
            ds = decode(raw, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
        except Exception as exc:
            raise IdentifierUndecodable(f"identifier cannot be decoded: {exc}") from exc
        return decoded(ds)

    def cancelled() -> bool:
        return assoc.dimse.cancel_req.pop(message_id, None) is not None

    def final(code: int | Dataset) -> bytes:
        return command_pdus(context_id, _final_response(message_id, sop_class, code), peer_max_pdu)

    batch = bytearray()
    source = answers_of or answers
    for code, found in source(FindRequest(assoc, identifier, sop_class, cancelled), scp_context):
        if found is None:
            batch += final(code)
            break
        data = _encoded(found, syntax)
        if not data:  # what pynetdicom answers when an identifier cannot be encoded
            log.error("C-FIND: a response identifier could not be encoded")
            batch += final(status.with_comment(status.FIND_ENCODING_FAILED, "cannot encode"))
            break
        command = find_response(message_id, sop_class, int(code), has_identifier=True)
        batch += command_pdus(context_id, command, peer_max_pdu)
        batch += data_set_pdus(context_id, data, peer_max_pdu)
        if len(batch) >= BATCH_BYTES:
            if not dul.queue_pdus(bytes(batch)):
                return  # released or aborted meanwhile: nobody to answer
            batch.clear()
    if batch:
        dul.queue_pdus(bytes(batch))


def _encoded(elements: list[Element] | Dataset, syntax: Any) -> bytes | None:
    """A match's identifier: written directly when it is plain (always, for the index's own
    attributes), by pydicom otherwise."""
    if isinstance(elements, Dataset):
        encoded = encode(
            elements, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated
        )
        return bytes(encoded) if encoded else None
    if syntax.is_little_endian and not syntax.is_deflated:
        data = encode_plain(elements, implicit_vr=syntax.is_implicit_VR)
        if data is not None:
            return data
    dataset = identifier_dataset(elements)
    encoded = encode(dataset, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    return bytes(encoded) if encoded else None


def _final_response(message_id: int, sop_class: str, code: int | Dataset) -> bytes:
    if isinstance(code, Dataset):
        comment = code.get("ErrorComment")
        return find_response(message_id, sop_class, int(code.Status), comment=comment or None)
    return find_response(message_id, sop_class, int(code))


@dataclass(frozen=True)
class FindRequest:
    """A C-FIND-RQ as the answers need it, however it arrived."""

    assoc: Association
    identifier: Callable[[], Dataset]  # decoded; raises IdentifierUndecodable
    sop_class_uid: str
    cancelled: Callable[[], bool]  # a C-CANCEL-RQ came for it


def answers(request: FindRequest, scp_context: ScpContext) -> Iterator[Answer]:
    """The responses to a C-FIND-RQ: pending ones with a match's elements, then the final
    one."""
    final = status.SUCCESS
    try:
        for answer in _answers(request, scp_context):
            code, _ = answer
            final = code if isinstance(code, int) else int(code.Status)
            yield answer
    except Exception:
        log.exception("C-FIND handler failed")
        final = status.FIND_INTERNAL_ERROR
        yield status.with_comment(final, "internal error (logged)"), None
    finally:
        get_metrics().requests.labels(service="find", result=result_class(final)).inc()


def _answers(request: FindRequest, scp_context: ScpContext) -> Iterator[Answer]:
    assoc = request.assoc
    caller = scp_context.access.allowed(assoc, "find")
    if caller is None:
        yield status.with_comment(status.NOT_AUTHORIZED, "this AE may not query here"), None
        return
    try:
        parsed = parse_identifier(
            request.identifier(), FIND_MODELS.get(request.sop_class_uid, "STUDY")
        )
        matches = _matches(scp_context, parsed, caller.facility_id)
    except IdentifierUndecodable as exc:
        yield status.with_comment(status.FIND_UNDECODABLE_IDENTIFIER, str(exc)), None
        return
    except (IdentifierInvalid, QueryError) as exc:
        yield status.with_comment(status.DOES_NOT_MATCH_SOP_CLASS, str(exc)), None
        return
    except _IndexDown as exc:
        yield status.with_comment(status.OUT_OF_RESOURCES, str(exc)), None
        return
    except Exception:
        log.exception("C-FIND from %s failed", caller.ae_title)
        yield status.with_comment(status.FIND_INTERNAL_ERROR, "internal error (logged)"), None
        return
    scp_context.audit.queried(assoc, caller, parsed.level, dict(parsed.filters), len(matches))
    pending = status.PENDING_WITH_UNSUPPORTED_KEYS if parsed.unsupported else status.PENDING
    for match in matches:
        if request.cancelled():
            yield status.CANCEL, None
            return
        yield pending, response_elements(parsed, match.values, scp_context.ae_title)
    yield status.SUCCESS, None


class _IndexDown(Exception):
    pass


def _matches(scp_context: ScpContext, parsed: ParsedIdentifier, facility_id: int) -> list[Match]:
    try:
        with scp_context.runtime.sessions() as session:
            return find(session, parsed.match_query(facility_id))
    except SQLAlchemyError as exc:
        log.warning("C-FIND: index unavailable: %s", exc)
        raise _IndexDown(f"index unavailable: {type(exc).__name__}") from exc
