"""C-STORE: hand the received bytes, as received, to the one write path (`noctis.core.ingest`).

Each incoming data set is written as a Part 10 instance (file meta built from the request and
the accepted transfer syntax) into the object store's writer for incoming data
(`noctis.storage.incoming`): by `noctis.scp.fast.direct_store` for almost every request, and here,
from the file pynetdicom spooled it to (``STORE_RECV_CHUNKED_DATASET``), for the rest.
`store_received` passes it on: no data set is decoded here, and no instance is ever held
whole in memory.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import C_STORE

from noctis.core.audit import AuditOutcome
from noctis.core.ingest import (
    FacilityRef,
    IngestError,
    IngestFailure,
    IngestOutcome,
    ingest,
)
from noctis.core.reconciliation import Sender
from noctis.dicom.part10 import PREAMBLE, part10_head
from noctis.scp import status
from noctis.scp.metrics import get_metrics, result_class

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.events import Event

    from noctis.scp.scp_context import ScpContext
    from noctis.storage import IncomingObject

log = logging.getLogger(__name__)

SUCCESS = status.Answer(status.SUCCESS)
INTERNAL_ERROR = status.Answer(status.STORE_INTERNAL_ERROR, "internal error (logged)")
CONTEXT_MISMATCH = status.Answer(
    status.DOES_NOT_MATCH_SOP_CLASS, "SOP Class differs from the presentation context's"
)

_STATUS_FOR_FAILURE = {
    IngestFailure.MALFORMED: status.CANNOT_UNDERSTAND,
    IngestFailure.MISMATCH: status.DOES_NOT_MATCH_SOP_CLASS,
    IngestFailure.CONFLICT: status.DUPLICATE_CONFLICT,
    IngestFailure.SERIES_OF_ANOTHER_STUDY: status.SERIES_OF_ANOTHER_STUDY,
    IngestFailure.STUDY_OF_ANOTHER_PATIENT: status.STUDY_OF_ANOTHER_PATIENT,
    IngestFailure.STORAGE_UNAVAILABLE: status.OUT_OF_RESOURCES,
    IngestFailure.INDEX_UNAVAILABLE: status.OUT_OF_RESOURCES,
    IngestFailure.QUOTA_EXCEEDED: status.OUT_OF_RESOURCES,  # comment: which quota, the usage
    IngestFailure.POOL_UNAVAILABLE: status.OUT_OF_RESOURCES,  # comment: which pool
}
# ErrorComment holds 64 characters: say what happened, not which UID (the sender knows it).
_COMMENT_FOR_FAILURE = {
    IngestFailure.MISMATCH: "data set SOP Class/Instance differ from the request",
    IngestFailure.CONFLICT: "already stored with another data set under this UID",
    IngestFailure.SERIES_OF_ANOTHER_STUDY: "series is filed under another study; not stored",
    IngestFailure.STUDY_OF_ANOTHER_PATIENT: "study is filed under another patient; not stored",
    IngestFailure.STORAGE_UNAVAILABLE: "object store unavailable, try again later",
    IngestFailure.INDEX_UNAVAILABLE: "index unavailable, try again later",
}


def handle_store(event: Event, scp_context: ScpContext) -> int | Dataset:
    """EVT_C_STORE handler (requests `noctis.scp.fast.direct_store` leaves to pynetdicom): the
    status to answer with, never an exception (pynetdicom would answer C211)."""
    request = cast(C_STORE, event.request)
    try:
        with scp_context.runtime.store.incoming() as incoming:
            _write_part10(event, incoming)
            answer = store_received(
                scp_context,
                event.assoc,
                str(request.AffectedSOPClassUID or ""),
                str(request.AffectedSOPInstanceUID or ""),
                incoming,
                context_sop_class=str(event.context.abstract_syntax),
            )
    except Exception:
        log.exception("C-STORE handler failed")
        answer = INTERNAL_ERROR
    return answer.for_pynetdicom()


def store_received(
    scp_context: ScpContext,
    assoc: Association,
    sop_class: str,
    sop_instance: str,
    incoming: IncomingObject,
    *,
    context_sop_class: str = "",
) -> status.Answer:
    """Ingest the received Part 10 instance written into ``incoming``, sent on a presentation
    context of ``context_sop_class``: the answer for the peer, never an exception. The caller
    closes ``incoming`` afterwards."""
    try:
        answer = _store(scp_context, assoc, sop_class, sop_instance, incoming, context_sop_class)
    except Exception:
        log.exception("C-STORE handler failed")
        return INTERNAL_ERROR
    get_metrics().requests.labels(service="store", result=result_class(answer.status)).inc()
    return answer


def _store(
    scp_context: ScpContext,
    assoc: Association,
    sop_class: str,
    sop_instance: str,
    incoming: IncomingObject,
    context_sop_class: str,
) -> status.Answer:
    metrics = get_metrics()
    caller = scp_context.access.allowed(assoc, "store")
    if caller is None:
        metrics.store_failures.labels(reason="not-authorized").inc()
        return status.Answer(status.NOT_AUTHORIZED, "this AE may not store here")
    if context_sop_class and sop_class != context_sop_class:
        # The context was negotiated for one SOP class; ingest then checks the data set
        # against the request, so all three agree.
        metrics.store_failures.labels(reason="context-mismatch").inc()
        log.warning(
            "C-STORE from %s refused: SOP Class %s sent on a context of %s",
            caller.ae_title,
            sop_class,
            context_sop_class,
        )
        scp_context.audit.stored(assoc, caller, None, AuditOutcome.FAILURE)
        return CONTEXT_MISMATCH
    started = time.perf_counter()
    try:
        result = ingest(
            scp_context.runtime,
            FacilityRef(caller.facility_id, caller.facility_name),
            incoming,
            expected_sop_class_uid=sop_class or None,
            expected_sop_instance_uid=sop_instance or None,
            sender=Sender(caller.ae_title, "ae", str(assoc.requestor.address)),
        )
    except IngestError as exc:
        metrics.store_failures.labels(reason=exc.failure.value).inc()
        log.warning(
            "C-STORE from %s refused (%s): SOP Instance %s: %s",
            caller.ae_title,
            exc.failure.value,
            sop_instance,
            exc.message,
        )
        scp_context.audit.stored(assoc, caller, None, AuditOutcome.FAILURE)
        comment = _COMMENT_FOR_FAILURE.get(exc.failure, exc.message)
        return status.Answer(_STATUS_FOR_FAILURE[exc.failure], comment)
    except Exception:
        metrics.store_failures.labels(reason="internal-error").inc()
        log.exception("C-STORE from %s failed: SOP Instance %s", caller.ae_title, sop_instance)
        return INTERNAL_ERROR
    metrics.store_seconds.observe(time.perf_counter() - started)
    metrics.instances_stored.labels(outcome=result.outcome.value).inc()
    scp_context.audit.stored(assoc, caller, result.header.study_instance_uid, AuditOutcome.SUCCESS)
    if result.outcome in (IngestOutcome.STORED, IngestOutcome.REPLACED):  # bytes kept
        metrics.bytes_stored.inc(result.size)
    return SUCCESS


def _write_part10(event: Event, incoming: IncomingObject) -> None:
    """Write the received instance into ``incoming`` as a Part 10 file.

    pynetdicom's spooled file (chunked receive), which it removes after the handler, is one
    already when it has a File Meta. Otherwise (no chunked receive, or the meta is missing):
    File Meta from the request and the accepted transfer syntax, then the data set bytes as
    received.
    """
    try:
        spooled: Path | None = Path(event.dataset_path)
    except AttributeError:
        spooled = None
    if spooled is not None and _has_file_meta(spooled):
        with spooled.open("rb") as source:
            incoming.write_from(source)
        return
    request = cast(C_STORE, event.request)
    incoming.write(
        part10_head(
            str(request.AffectedSOPClassUID or ""),
            str(request.AffectedSOPInstanceUID or ""),
            str(event.context.transfer_syntax),
        )
    )
    if spooled is not None:
        with spooled.open("rb") as source:
            incoming.write_from(source)
    else:
        incoming.write(event.encoded_dataset(include_meta=False))


def _has_file_meta(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(len(PREAMBLE))
    return len(head) == len(PREAMBLE) and head.endswith(b"DICM")
