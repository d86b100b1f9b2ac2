"""Storage Commitment Push Model SCP (PS3.4 Annex J): N-ACTION in, N-EVENT-REPORT out.

`serve_commitment` answers one N-ACTION (Action Type 1, Request Storage Commitment) on the
association it came on (`noctis.scp.fast.association` routes it here on both DIMSE paths):

1. the request is checked (Action Type, the well-known SOP Instance, a Transaction UID, a
   non-empty Referenced SOP Sequence) and the caller must be allowed the ``commitment``
   service; anything wrong gets a failure status and no event report;
2. N-ACTION-RSP Success goes out at once: the request is received, nothing is promised yet;
3. each referenced instance is checked (`noctis.core.commitment`) in the caller's facility;
4. the N-EVENT-REPORT (Event Type 1: all committed; 2: failures exist) is sent on the same
   association when the requester is still associated and negotiated SCP/SCU role selection
   for the Push Model giving the archive the right to send requests on it; otherwise, or if
   that fails, on a new association from the archive to the requester's registered host and
   port, retried with doubling waits while the requester is down (both in
   `noctis.scp.commitment_reports`).
"""

from __future__ import annotations

import logging
from io import BytesIO
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import N_ACTION
from pynetdicom.dsutils import decode

from noctis.core.commitment import Reference
from noctis.scp import status
from noctis.scp.commitment_reports import STORAGE_COMMITMENT_INSTANCE, CommitmentRequest
from noctis.scp.metrics import get_metrics, result_class

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.presentation import PresentationContext

    from noctis.scp.scp_context import ScpContext

log = logging.getLogger(__name__)

__all__ = ["STORAGE_COMMITMENT_INSTANCE", "serve_commitment"]

REQUEST_STORAGE_COMMITMENT = 1  # Action Type ID

# N-ACTION failure statuses (PS3.7 C.4.2 / Annex C)
PROCESSING_FAILURE = 0x0110
NO_SUCH_SOP_INSTANCE = 0x0112
INVALID_ARGUMENT_VALUE = 0x0115
NO_SUCH_ACTION = 0x0123
RESOURCE_LIMITATION = 0x0213
# References one request may name: a study of a few thousand instances is the usual request;
# the list is held in memory while it is checked and reported.
MAX_REFERENCES = 50_000

_UID_CHARACTERS = frozenset("0123456789.")


class RequestRefused(ValueError):
    """The N-ACTION cannot be processed: its failure status and a comment."""

    def __init__(self, code: int, comment: str) -> None:
        super().__init__(comment)
        self.code = code


def serve_commitment(
    assoc: Association,
    request: N_ACTION,
    context: PresentationContext,
    scp_context: ScpContext,
) -> None:
    """Answer one Storage Commitment N-ACTION, then report its result; never raises."""
    context_id = int(context.context_id or 0)
    try:
        asked = _accept(assoc, request, context, scp_context)
    except RequestRefused as exc:
        _respond(assoc, request, context_id, exc.code, str(exc))
        return
    except Exception:
        log.exception("storage commitment N-ACTION failed")
        _respond(assoc, request, context_id, PROCESSING_FAILURE, "internal error (logged)")
        return
    _respond(assoc, request, context_id, status.SUCCESS)
    reports = scp_context.commitment
    if _may_report_here(context) and reports.report_on(assoc, context, asked):
        return
    reports.report_later(asked)


def _accept(
    assoc: Association, request: N_ACTION, context: PresentationContext, scp_context: ScpContext
) -> CommitmentRequest:
    caller = scp_context.access.allowed(assoc, "commitment")
    if caller is None:
        raise RequestRefused(status.NOT_AUTHORIZED, "this AE may not request commitment here")
    if request.ActionTypeID != REQUEST_STORAGE_COMMITMENT:
        raise RequestRefused(NO_SUCH_ACTION, f"no action type {request.ActionTypeID}")
    if str(request.RequestedSOPInstanceUID or "") != STORAGE_COMMITMENT_INSTANCE:
        raise RequestRefused(
            NO_SUCH_SOP_INSTANCE, f"requests go to SOP Instance {STORAGE_COMMITMENT_INSTANCE}"
        )
    information = _decode(request.ActionInformation, context)
    return CommitmentRequest(
        facility_id=caller.facility_id,
        calling_ae=caller.ae_title,
        transaction_uid=_transaction_uid(information),
        references=_references(information),
    )


def _decode(encoded: BytesIO | None, context: PresentationContext) -> Dataset:
    if encoded is None:
        raise RequestRefused(INVALID_ARGUMENT_VALUE, "the request has no action information")
    syntax = context.transfer_syntax[0]
    try:
        information = decode(
            encoded, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated
        )
        for element in information.iterall():
            _ = element.value
    except Exception as exc:
        raise RequestRefused(
            INVALID_ARGUMENT_VALUE, f"action information cannot be decoded: {exc}"
        ) from exc
    return information


def _transaction_uid(information: Dataset) -> str:
    uid = str(information.get("TransactionUID", "") or "").strip()
    if not _valid_uid(uid):
        raise RequestRefused(INVALID_ARGUMENT_VALUE, "Transaction UID missing or invalid")
    return uid


def _references(information: Dataset) -> tuple[Reference, ...]:
    items = information.get("ReferencedSOPSequence") or []
    if not items:
        raise RequestRefused(INVALID_ARGUMENT_VALUE, "Referenced SOP Sequence is empty")
    if len(items) > MAX_REFERENCES:
        raise RequestRefused(
            RESOURCE_LIMITATION, f"more than {MAX_REFERENCES} references in one request"
        )
    references = []
    for number, item in enumerate(items, start=1):
        sop_class = str(item.get("ReferencedSOPClassUID", "") or "").strip()
        sop_instance = str(item.get("ReferencedSOPInstanceUID", "") or "").strip()
        if not _valid_uid(sop_class) or not _valid_uid(sop_instance):
            raise RequestRefused(
                INVALID_ARGUMENT_VALUE, f"Referenced SOP item {number} lacks a valid UID"
            )
        references.append(Reference(sop_class, sop_instance))
    return tuple(references)


def _valid_uid(uid: str) -> bool:
    return 0 < len(uid) <= 64 and set(uid) <= _UID_CHARACTERS


def _respond(
    assoc: Association, request: N_ACTION, context_id: int, code: int, comment: str = ""
) -> None:
    response = N_ACTION()
    response.MessageIDBeingRespondedTo = request.MessageID
    response.AffectedSOPClassUID = request.RequestedSOPClassUID
    response.AffectedSOPInstanceUID = request.RequestedSOPInstanceUID
    response.ActionTypeID = request.ActionTypeID
    response.Status = code
    if comment:
        response.ErrorComment = status.error_comment(comment)
    assoc.dimse.send_msg(response, context_id)
    get_metrics().requests.labels(service="commitment", result=result_class(code)).inc()


def _may_report_here(context: PresentationContext) -> bool:
    """The requester negotiated role selection letting the archive send requests on this
    context (it proposed the SCP role for itself, and it was accepted)."""
    return bool(context.as_scu)
