"""Storage commitment results: checked, then sent as N-EVENT-REPORTs (PS3.4 J.3.3).

On the requester's own association (`CommitmentReports.report_on`, from its reactor thread,
right after the N-ACTION-RSP), or in the background on a new association from the archive to
the requester's registered host and port (`CommitmentReports.report_later`), proposing the
Push Model with the archive in the SCP role, retried with doubling waits while the requester
is down. Each attempt checks the instances again (`noctis.core.commitment`).
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
from pynetdicom.dimse_primitives import N_EVENT_REPORT
from pynetdicom.dsutils import encode
from pynetdicom.pdu_primitives import A_RELEASE, SCP_SCU_RoleSelectionNegotiation

from noctis.core.commitment import CommitmentResult, Reference, check_commitment
from noctis.core.facilities import move_destination
from noctis.scp import status
from noctis.scp.contexts import QUERY_SYNTAXES, STORAGE_COMMITMENT_PUSH_MODEL
from noctis.scp.fast.requestor import requesting
from noctis.scp.metrics import get_metrics

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.presentation import PresentationContext

    from noctis.core.runtime import Runtime

log = logging.getLogger(__name__)

# The well-known SOP Instance every request is addressed to (PS3.4 J.3.5).
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
EVENT_ALL_COMMITTED = 1  # Event Type ID: storage commitment request successful
EVENT_FAILURES_EXIST = 2  # Event Type ID: storage commitment request complete, failures exist

_REPORT_MESSAGE_ID = 1
_POLL = 0.005  # s between looks for the report's response on the requester's association
_RELEASE_GRACE = 1.0  # s the report's response may still take once the requester releases


@dataclass(frozen=True)
class CommitmentRequest:
    """What one N-ACTION asks, and of whom the answer must go back to."""

    facility_id: int
    calling_ae: str
    transaction_uid: str
    references: tuple[Reference, ...]


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
