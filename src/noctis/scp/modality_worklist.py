"""Modality Worklist C-FIND (PS3.4 Annex K): a modality's scheduled steps.

On the fast DIMSE path the association hands a worklist C-FIND-RQ to
`noctis.scp.find.serve_find` with `worklist_answers` as the source of its answers: encoded
there and sent in batches, as the query/retrieve models' are. With the fast path off it
reaches pynetdicom's Basic Worklist Management service class and the EVT_C_FIND handler,
`handle_c_find`, which yields the same answers (and sends every other model to
`noctis.scp.find.handle_find`).

The caller must be allowed the ``worklist`` service; it sees its own facility's scheduled
orders only (`noctis.core.modality_worklist`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from noctis.core.modality_worklist import (
    MODALITY_WORKLIST_FIND,
    matching_orders,
    parse_query,
    worklist_item,
)
from noctis.index.models import Facility
from noctis.index.query import QueryError
from noctis.scp import status
from noctis.scp.find import FindRequest, FindResponse, handle_find
from noctis.scp.identifiers import IdentifierUndecodable, decode_identifier
from noctis.scp.metrics import get_metrics, result_class

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.events import Event

    from noctis.scp.scp_context import ScpContext

log = logging.getLogger(__name__)


def handle_c_find(event: Event, scp_context: ScpContext) -> Iterator[FindResponse]:
    """EVT_C_FIND: the worklist model here, every other model to `handle_find`."""
    if str(event.request.AffectedSOPClassUID) != MODALITY_WORKLIST_FIND:
        return handle_find(event, scp_context)
    request = FindRequest(
        event.assoc,
        lambda: decode_identifier(event),
        MODALITY_WORKLIST_FIND,
        lambda: bool(event.is_cancelled),
    )
    return worklist_answers(request, scp_context)


def no_delay(assoc: Association) -> None:
    """Nagle's algorithm off on this association's socket. pynetdicom's service classes
    write a response's command and data set PDUs separately; with Nagle on, the second waits
    for the peer's delayed ACK: ~40 ms per answer on loopback (95 ms for a worklist query
    of one answer, 12 ms without; bench/mwl.py)."""
    sock = getattr(assoc.dul, "socket", None)
    raw = getattr(sock, "socket", None)
    if raw is not None:
        with contextlib.suppress(OSError):  # closed meanwhile: nobody to answer anyway
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def worklist_answers(request: FindRequest, scp_context: ScpContext) -> Iterator[FindResponse]:
    """The responses to a worklist C-FIND-RQ: a data set per scheduled step matched, then the
    final status (on the fast path `noctis.scp.find.serve_find` encodes and sends them in
    batches; through pynetdicom, `handle_c_find` yields them)."""
    no_delay(request.assoc)
    final = status.SUCCESS
    try:
        for answer in _answers(request, scp_context):
            code = answer[0]
            final = code if isinstance(code, int) else int(code.Status)
            yield answer
    except Exception:
        log.exception("worklist C-FIND failed")
        final = status.FIND_INTERNAL_ERROR
        yield status.with_comment(final, "internal error (logged)"), None
    finally:
        get_metrics().requests.labels(service="worklist", result=result_class(final)).inc()


def _answers(find: FindRequest, scp_context: ScpContext) -> Iterator[FindResponse]:
    assoc = find.assoc
    caller = scp_context.access.allowed(assoc, "worklist")
    if caller is None:
        yield status.with_comment(status.NOT_AUTHORIZED, "this AE may not query the worklist"), None
        return
    try:
        request = find.identifier()
        query = parse_query(request)
    except IdentifierUndecodable as exc:
        yield status.with_comment(status.FIND_UNDECODABLE_IDENTIFIER, str(exc)), None
        return
    except (QueryError, ValueError, TypeError) as exc:
        yield status.with_comment(status.DOES_NOT_MATCH_SOP_CLASS, str(exc)), None
        return
    try:
        with scp_context.runtime.sessions() as session:
            orders = matching_orders(session, caller.facility_id, query)
            facility_name = session.scalar(
                select(Facility.display_name).where(Facility.id == caller.facility_id)
            )
            answers: list[Dataset] = [
                worklist_item(order, request, facility_name=facility_name or "") for order in orders
            ]
    except QueryError as exc:
        yield status.with_comment(status.DOES_NOT_MATCH_SOP_CLASS, str(exc)), None
        return
    except SQLAlchemyError as exc:
        log.warning("worklist C-FIND: index unavailable: %s", exc)
        yield status.with_comment(status.OUT_OF_RESOURCES, "index unavailable"), None
        return
    scp_context.audit.queried(assoc, caller, "WORKLIST", query.keys, len(answers))
    for answer in answers:
        if find.cancelled():
            yield status.CANCEL, None
            return
        yield status.PENDING, answer
    yield status.SUCCESS, None
