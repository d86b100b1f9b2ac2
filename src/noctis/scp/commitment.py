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
   port (`CommitmentReports`), retried with doubling waits while the requester is down.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, build_context
from pynetdicom.dimse_primitives import N_ACTION, N_EVENT_REPORT
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu_primitives import A_RELEASE, SCP_SCU_RoleSelectionNegotiation

from noctis.core.commitment import CommitmentResult, Reference, check_commitment
from noctis.core.facilities import move_destination
from noctis.scp import status
from noctis.scp.contexts import QUERY_SYNTAXES, STORAGE_COMMITMENT_PUSH_MODEL
from noctis.scp.fast.requestor import requesting
from noctis.scp.metrics import get_metrics, result_class

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.presentation import PresentationContext

    from noctis.core.runtime import Runtime
    from noctis.scp.scp_context import ScpContext

log = logging.getLogger(__name__)

# The well-known SOP Instance every request is addressed to (PS3.4 J.3.5).
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_STORAGE_COMMITMENT = 1  # Action Type ID
EVENT_ALL_COMMITTED = 1  # Event Type ID: storage commitment request successful
EVENT_FAILURES_EXIST = 2  # Event Type ID: storage commitment request complete, failures exist

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
_REPORT_MESSAGE_ID = 1
_POLL = 0.005  # s between looks for the report's response on the requester's association
_RELEASE_GRACE = 1.0  # s the report's response may still take once the requester releases


class RequestRefused(ValueError):
    """The N-ACTION cannot be processed: its failure status and a comment."""

    def __init__(self, code: int, comment: str) -> None:
        super().__init__(comment)
        self.code = code


@dataclass(frozen=True)
class CommitmentRequest:
    """What one N-ACTION asks, and of whom the answer must go back to."""

    facility_id: int
    calling_ae: str
    transaction_uid: str
    references: tuple[Reference, ...]


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


def _send_on(
    assoc: Association,
    context: PresentationContext,
    information: Dataset,
    event_type: int,
    *,
    timeout: float,
) -> int | None:
    """Send the N-EVENT-REPORT on the requester's own association, from its reactor thread
    (which serves nothing meanwhile), and wait for the response: its status, or None if none
    came (the requester aborted, or asked to release and did not answer within a second, or
    ``timeout`` passed). Not pynetdicom's ``send_n_event_report``: that one waits out the
    whole DIMSE timeout when the requester releases instead of answering, and the requester
    waits as long for its release. Requests the requester sends meanwhile are kept, in order,
    for the reactor."""
    syntax = context.transfer_syntax[0]
    encoded = encode(
        information, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated
    )
    if encoded is None:
        raise ValueError("the event information cannot be encoded")
    request = N_EVENT_REPORT()
    request.MessageID = _REPORT_MESSAGE_ID
    request.AffectedSOPClassUID = UID(STORAGE_COMMITMENT_PUSH_MODEL)
    request.AffectedSOPInstanceUID = UID(STORAGE_COMMITMENT_INSTANCE)
    request.EventTypeID = event_type
    request.EventInformation = BytesIO(encoded)
    assoc.dimse.send_msg(request, int(context.context_id or 0))
    held: list[tuple[int | None, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while assoc.is_established and time.monotonic() < deadline:
            context_id, message = assoc.dimse.get_msg(block=False)
            if message is None:
                if _release_requested(assoc):
                    deadline = min(deadline, time.monotonic() + _RELEASE_GRACE)
                time.sleep(_POLL)
            elif (
                isinstance(message, N_EVENT_REPORT)
                and getattr(message, "MessageIDBeingRespondedTo", None) == _REPORT_MESSAGE_ID
            ):
                return int(message.Status)
            else:
                held.append((context_id, message))
        return None
    finally:
        _requeue(assoc, held)


def _requeue(assoc: Association, held: list[tuple[int | None, Any]]) -> None:
    """Put ``held`` back on the association's message queue ahead of what came after."""
    if not held:
        return
    later = []
    while True:
        context_id, message = assoc.dimse.get_msg(block=False)
        if message is None:
            break
        later.append((context_id, message))
    for item in [*held, *later]:
        assoc.dimse.msg_queue.put(item)


def _release_requested(assoc: Association) -> bool:
    """The requester has asked to release (its A-RELEASE-RQ waits for the reactor, which
    answers it once this request is served): left where it is, only looked at."""
    primitive = assoc.dul.peek_next_pdu()
    return isinstance(primitive, A_RELEASE) and primitive.result is None


def event_information(result: CommitmentResult, transaction_uid: str, ae_title: str) -> Dataset:
    """The N-EVENT-REPORT's Event Information (PS3.4 Table J.3-2)."""
    information = Dataset()
    information.TransactionUID = transaction_uid
    information.RetrieveAETitle = ae_title
    if result.committed:
        information.ReferencedSOPSequence = [_item(ref) for ref in result.committed]
    if result.failed:
        failed = []
        for ref, reason in result.failed:
            item = _item(ref)
            item.FailureReason = reason
            failed.append(item)
        information.FailedSOPSequence = failed
    return information


def _item(ref: Reference) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class_uid
    item.ReferencedSOPInstanceUID = ref.sop_instance_uid
    return item


class CommitmentReports:
    """Checks commitment requests and sends their N-EVENT-REPORTs, on the requester's own
    association or, in the background, on a new one to its registered host and port."""

    def __init__(self, runtime: Runtime, ae_title: str) -> None:
        self.runtime = runtime
        self.ae_title = ae_title
        self._stopping = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def result(self, asked: CommitmentRequest) -> CommitmentResult:
        with self.runtime.reader() as session:
            return check_commitment(
                session, self.runtime.store, asked.facility_id, list(asked.references)
            )

    def report_on(
        self, assoc: Association, context: PresentationContext, asked: CommitmentRequest
    ) -> bool:
        """Check and report on ``assoc``; False if the report could not be delivered there."""
        try:
            result = self.result(asked)
        except Exception:
            log.exception("storage commitment %s: check failed", asked.transaction_uid)
            return False
        if not assoc.is_established or _release_requested(assoc):
            return False  # the requester is leaving: it gets a new association
        try:
            code = _send_on(
                assoc,
                context,
                event_information(result, asked.transaction_uid, self.ae_title),
                EVENT_ALL_COMMITTED if result.all_committed else EVENT_FAILURES_EXIST,
                timeout=self.runtime.settings.dimse_timeout,
            )
        except Exception as exc:
            log.info(
                "storage commitment %s: not sent on the same association (%s)",
                asked.transaction_uid,
                exc,
            )
            return False
        delivered = code == status.SUCCESS
        if delivered:
            _reported(asked, result, "same association")
        return delivered

    def report_later(self, asked: CommitmentRequest) -> None:
        """Report on a new association, in the background."""
        with self._lock:
            if self._stopping.is_set():
                log.warning(
                    "storage commitment %s: SCP stopping, result not sent", asked.transaction_uid
                )
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="noctis-stgcmt")
            self._pool.submit(self._deliver, asked)

    def stop(self) -> None:
        """Give up reports still waiting for their requester (each is logged)."""
        with self._lock:
            self._stopping.set()
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)  # those not started yet give up at once, logged

    def _deliver(self, asked: CommitmentRequest) -> None:
        settings = self.runtime.settings
        attempts = max(1, settings.commitment_report_attempts)
        wait = settings.commitment_report_backoff_seconds
        attempt = 0
        while not self._stopping.is_set():
            attempt += 1
            try:
                if self._send_new_association(asked):
                    return
            except _NoAddress as exc:
                log.warning("storage commitment %s: %s", asked.transaction_uid, exc)
                get_metrics().commitment_reports.labels(outcome="no-address").inc()
                return
            except Exception:
                log.exception("storage commitment %s: report failed", asked.transaction_uid)
            if attempt >= attempts or self._stopping.wait(wait):
                break
            wait *= 2
        get_metrics().commitment_reports.labels(outcome="undelivered").inc()
        log.error(
            "storage commitment %s: result not delivered to %s after %d attempt(s); the "
            "requester must ask again",
            asked.transaction_uid,
            asked.calling_ae,
            attempt,
        )

    def _send_new_association(self, asked: CommitmentRequest) -> bool:
        with self.runtime.reader() as session:
            destination = move_destination(session, asked.facility_id, asked.calling_ae)
        if destination is None:
            raise _NoAddress(f"{asked.calling_ae} has no registered host and port: result not sent")
        result = self.result(asked)
        settings = self.runtime.settings
        ae = AE(ae_title=self.ae_title)
        # A requester that is down answers the connection with a reset at once; one behind a
        # firewall that drops it would otherwise hold the attempt for the OS's connect timeout.
        ae.connection_timeout = ae.acse_timeout = ae.network_timeout = settings.network_timeout
        ae.dimse_timeout = settings.dimse_timeout
        context = build_context(STORAGE_COMMITMENT_PUSH_MODEL, list(QUERY_SYNTAXES))
        # The archive proposes the SCP role for itself, the requester keeps the SCU role
        # (PS3.4 J.3.3.1.3 note).
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid = UID(STORAGE_COMMITMENT_PUSH_MODEL)
        role.scu_role = False
        role.scp_role = True
        assoc = requesting(
            ae.associate(
                destination.host,
                destination.port,
                contexts=[context],
                ae_title=destination.ae_title,
                ext_neg=[role],
            )
        )
        if not assoc.is_established:
            log.info(
                "storage commitment %s: %s at %s:%d not reachable",
                asked.transaction_uid,
                destination.ae_title,
                destination.host,
                destination.port,
            )
            return False
        try:
            answer, _ = assoc.send_n_event_report(
                event_information(result, asked.transaction_uid, self.ae_title),
                EVENT_ALL_COMMITTED if result.all_committed else EVENT_FAILURES_EXIST,
                UID(STORAGE_COMMITMENT_PUSH_MODEL),
                UID(STORAGE_COMMITMENT_INSTANCE),
            )
        finally:
            if assoc.is_established:
                assoc.release()
        code = int(answer.get("Status", -1))
        if code != status.SUCCESS:
            log.info(
                "storage commitment %s: %s answered status 0x%04X",
                asked.transaction_uid,
                destination.ae_title,
                code & 0xFFFF,
            )
            return False
        _reported(asked, result, "new association")
        return True


class _NoAddress(LookupError):
    pass


def _reported(asked: CommitmentRequest, result: CommitmentResult, how: str) -> None:
    get_metrics().commitment_reports.labels(outcome=how.replace(" ", "-")).inc()
    log.info(
        "storage commitment %s reported to %s on the %s: %d committed, %d failed",
        asked.transaction_uid,
        asked.calling_ae,
        how,
        len(result.committed),
        len(result.failed),
    )
