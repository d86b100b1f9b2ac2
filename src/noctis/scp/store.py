"""C-STORE: hand the received bytes, as received, to the one write path (`noctis.ingest`).

pynetdicom spools each incoming data set to a Part 10 file (``STORE_RECV_CHUNKED_DATASET``,
file meta written from the request and the accepted transfer syntax) and the handler passes
that file on: no data set is decoded here, and no instance is ever held whole in memory.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import C_STORE

from noctis.audit import AuditOutcome
from noctis.dicom.part10 import PREAMBLE, part10_head
from noctis.ingest import FacilityRef, IngestError, IngestFailure, IngestOutcome, ingest
from noctis.scp import status
from noctis.scp.metrics import get_metrics, result_class

if TYPE_CHECKING:
    from pynetdicom.events import Event

    from noctis.scp.runtime import ScpRuntime

log = logging.getLogger(__name__)

_STATUS_FOR_FAILURE = {
    IngestFailure.MALFORMED: status.CANNOT_UNDERSTAND,
    IngestFailure.MISMATCH: status.DOES_NOT_MATCH_SOP_CLASS,
    IngestFailure.CONFLICT: status.DUPLICATE_CONFLICT,
    IngestFailure.STORAGE_UNAVAILABLE: status.OUT_OF_RESOURCES,
    IngestFailure.INDEX_UNAVAILABLE: status.OUT_OF_RESOURCES,
}
# ErrorComment holds 64 characters: say what happened, not which UID (the sender knows it).
_COMMENT_FOR_FAILURE = {
    IngestFailure.MISMATCH: "data set SOP Class/Instance differ from the request",
    IngestFailure.CONFLICT: "already stored with different content under this UID",
    IngestFailure.STORAGE_UNAVAILABLE: "object store unavailable, try again later",
    IngestFailure.INDEX_UNAVAILABLE: "index unavailable, try again later",
}


def handle_store(event: Event, runtime: ScpRuntime) -> int | Dataset:
    """EVT_C_STORE handler: the status to answer with, never an exception (pynetdicom would
    answer C211 and leave the spooled file behind)."""
    try:
        answer = _store(event, runtime)
        code = answer if isinstance(answer, int) else int(answer.Status)
        get_metrics().requests.labels(service="store", result=result_class(code)).inc()
    except Exception:
        log.exception("C-STORE handler failed")
        return status.with_comment(status.STORE_INTERNAL_ERROR, "internal error (logged)")
    return answer


def _store(event: Event, runtime: ScpRuntime) -> int | Dataset:
    metrics = get_metrics()
    caller = runtime.access.allowed(event.assoc, "store")
    if caller is None:
        metrics.store_failures.labels(reason="not-authorized").inc()
        return status.with_comment(status.NOT_AUTHORIZED, "this AE may not store here")
    request = cast(C_STORE, event.request)
    sop_class = str(request.AffectedSOPClassUID or "")
    sop_instance = str(request.AffectedSOPInstanceUID or "")
    started = time.perf_counter()
    staged: Path | None = None
    try:
        path, staged = _part10_file(event, runtime.spool_dir)
        result = ingest(
            runtime.archive,
            FacilityRef(caller.facility_id, caller.facility_name),
            path,
            expected_sop_class_uid=sop_class or None,
            expected_sop_instance_uid=sop_instance or None,
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
        runtime.audit.stored(event.assoc, caller, None, AuditOutcome.FAILURE)
        comment = _COMMENT_FOR_FAILURE.get(exc.failure, exc.message)
        return status.with_comment(_STATUS_FOR_FAILURE[exc.failure], comment)
    except Exception:
        metrics.store_failures.labels(reason="internal-error").inc()
        log.exception("C-STORE from %s failed: SOP Instance %s", caller.ae_title, sop_instance)
        return status.with_comment(status.STORE_INTERNAL_ERROR, "internal error (logged)")
    finally:
        if staged is not None:
            staged.unlink(missing_ok=True)
    metrics.store_seconds.observe(time.perf_counter() - started)
    metrics.instances_stored.labels(outcome=result.outcome.value).inc()
    runtime.audit.stored(
        event.assoc, caller, result.header.study_instance_uid, AuditOutcome.SUCCESS
    )
    if result.outcome is not IngestOutcome.DUPLICATE:
        metrics.bytes_stored.inc(result.size)
    return status.SUCCESS


def _part10_file(event: Event, spool_dir: Path) -> tuple[Path, Path | None]:
    """The received instance as a Part 10 file, and the file to remove afterwards (if ours).

    pynetdicom writes the spooled file with its file meta and removes it after the handler.
    Without chunked receive (or if the meta is missing), write one here: file meta from the
    request and the accepted transfer syntax, then the data set bytes as received.
    """
    try:
        spooled: Path | None = Path(event.dataset_path)
    except AttributeError:
        spooled = None
    if spooled is not None and _has_file_meta(spooled):
        return spooled, None
    request = cast(C_STORE, event.request)
    head = part10_head(
        str(request.AffectedSOPClassUID or ""),
        str(request.AffectedSOPInstanceUID or ""),
        str(event.context.transfer_syntax),
    )
    with tempfile.NamedTemporaryFile(dir=spool_dir, suffix=".dcm", delete=False) as handle:
        handle.write(head)
        if spooled is not None:
            with spooled.open("rb") as source:
                shutil.copyfileobj(source, handle)
        else:
            handle.write(event.encoded_dataset(include_meta=False))
    return Path(handle.name), Path(handle.name)


def _has_file_meta(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(len(PREAMBLE))
    return len(head) == len(PREAMBLE) and head.endswith(b"DICM")
