"""Modality Performed Procedure Step SCP (PS3.4 Annex F): N-CREATE, then N-SET.

A modality creates a step IN PROGRESS when it starts an exam (N-CREATE, naming the order in
its Scheduled Step Attributes Sequence: Study Instance UID, accession number, requested
procedure ID) and sets it COMPLETED or DISCONTINUED at the end (N-SET); the order follows
(`noctis.core.orders`). A completed or discontinued step is final.

Both DIMSE paths hand these to pynetdicom's Procedure Step service class and from there to
`handle_n_create` and `handle_n_set`. Statuses (PS3.4 F.7.2, PS3.7 Annex C):

| situation                                          | N-CREATE | N-SET |
|----------------------------------------------------|----------|-------|
| the caller's AE may not use ``mpps``               | 0124     | 0124  |
| attribute list missing or undecodable              | 0120     | 0120  |
| no Scheduled Step Attributes Sequence              | 0120     |       |
| status not IN PROGRESS (create) / not a step status| 0106     | 0106  |
| the SOP Instance exists already                    | 0111     |       |
| no such SOP Instance                               |          | 0112  |
| the step is COMPLETED or DISCONTINUED              |          | 0110 + comment |
| index unavailable                                  | 0213     | 0213  |
| unexpected error (logged)                          | 0110     | 0110  |
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy.exc import SQLAlchemyError

from noctis.core.orders import StepRefused, create_step, find_order_for_step, update_step
from noctis.scp import status
from noctis.scp.contexts import MODALITY_PERFORMED_PROCEDURE_STEP
from noctis.scp.metrics import get_metrics, result_class
from noctis.scp.modality_worklist import no_delay

if TYPE_CHECKING:
    from pynetdicom.events import Event

    from noctis.scp.scp_context import ScpContext

log = logging.getLogger(__name__)

PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_SOP_INSTANCE = 0x0112
INVALID_ATTRIBUTE_VALUE = 0x0106
MISSING_ATTRIBUTE = 0x0120
RESOURCE_LIMITATION = 0x0213
# PS3.4 F.7.2.2.2: Error ID A710 comment for a step that is no longer IN PROGRESS
NO_LONGER_UPDATABLE = "Performed Procedure Step Object may no longer be updated"

_REFUSALS = {
    "duplicate": DUPLICATE_SOP_INSTANCE,
    "unknown": NO_SUCH_SOP_INSTANCE,
    "final": PROCESSING_FAILURE,
    "invalid": INVALID_ATTRIBUTE_VALUE,
}
# Attributes kept on the step for the record (the rest of the list is not).
_KEPT = (
    "PerformedProcedureStepStatus",
    "PerformedProcedureStepID",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformedProcedureStepEndDate",
    "PerformedProcedureStepEndTime",
    "PerformedProcedureStepDescription",
    "PerformedStationAETitle",
    "Modality",
    "PatientID",
    "PatientName",
)

Response = tuple[int | Dataset, Dataset | None]


class _Refused(Exception):
    def __init__(self, code: int, comment: str) -> None:
        super().__init__(comment)
        self.code = code


def handle_n_create(event: Event, scp_context: ScpContext) -> Response:
    return _serve("create", event, scp_context)


def handle_n_set(event: Event, scp_context: ScpContext) -> Response:
    return _serve("set", event, scp_context)


def _serve(operation: str, event: Event, scp_context: ScpContext) -> Response:
    no_delay(event.assoc)
    code = status.SUCCESS
    try:
        if str(_sop_class(event)) != MODALITY_PERFORMED_PROCEDURE_STEP:
            raise _Refused(0x0118, "no such SOP class here")  # not reached: no such context
        caller = scp_context.access.allowed(event.assoc, "mpps")
        if caller is None:
            raise _Refused(status.NOT_AUTHORIZED, "this AE may not report procedure steps")
        with scp_context.runtime.sessions.begin() as session:
            if operation == "create":
                answer = _create(event, session, caller.facility_id, caller.ae_title)
            else:
                answer = _set(event, session, caller.facility_id, caller.ae_title)
        return status.SUCCESS, answer
    except _Refused as refused:
        code = refused.code
        return status.with_comment(code, str(refused)), None
    except StepRefused as refused:
        code = _REFUSALS[refused.reason]
        comment = NO_LONGER_UPDATABLE if refused.reason == "final" else str(refused)
        return status.with_comment(code, comment), None
    except SQLAlchemyError as exc:
        log.warning("MPPS N-%s: index unavailable: %s", operation.upper(), exc)
        code = RESOURCE_LIMITATION
        return status.with_comment(code, "index unavailable"), None
    except Exception:
        log.exception("MPPS N-%s failed", operation.upper())
        code = PROCESSING_FAILURE
        return status.with_comment(code, "internal error (logged)"), None
    finally:
        get_metrics().requests.labels(service="mpps", result=result_class(code)).inc()


def _sop_class(event: Event) -> str:
    request = event.request
    return str(
        getattr(request, "AffectedSOPClassUID", None)
        or getattr(request, "RequestedSOPClassUID", None)
        or ""
    )


def _create(event: Event, session: Any, facility_id: int, calling: str) -> Dataset:
    attributes = _attribute_list(event, "attribute_list")
    step_status = str(attributes.get("PerformedProcedureStepStatus", "") or "").strip()
    if not step_status:
        raise _Refused(MISSING_ATTRIBUTE, "Performed Procedure Step Status is missing")
    scheduled = attributes.get("ScheduledStepAttributesSequence")
    if not scheduled:
        raise _Refused(MISSING_ATTRIBUTE, "Scheduled Step Attributes Sequence is missing")
    order = find_order_for_step(
        session,
        facility_id,
        study_instance_uids=_all(scheduled, "StudyInstanceUID"),
        accession_numbers=_all(scheduled, "AccessionNumber"),
        requested_procedure_ids=_all(scheduled, "RequestedProcedureID"),
    )
    sop_uid = str(event.request.AffectedSOPInstanceUID or "") or generate_uid()
    create_step(
        session,
        facility_id,
        sop_uid,
        status=step_status,
        order=order,
        calling_ae_title=calling,
        attributes=_kept(attributes),
    )
    answer = Dataset()
    if event.request.AffectedSOPInstanceUID is None:
        answer.AffectedSOPInstanceUID = sop_uid  # pynetdicom moves it to the response
    return answer


def _set(event: Event, session: Any, facility_id: int, calling: str) -> Dataset:
    changes = _attribute_list(event, "modification_list")
    sop_uid = str(event.request.RequestedSOPInstanceUID or "")
    step_status = str(changes.get("PerformedProcedureStepStatus", "") or "").strip() or None
    update_step(
        session,
        facility_id,
        sop_uid,
        status=step_status,
        calling_ae_title=calling,
        attributes=_kept(changes),
    )
    return Dataset()


def _attribute_list(event: Event, name: str) -> Dataset:
    try:
        data = getattr(event, name)
        for element in data.iterall():
            _ = element.value
    except Exception as exc:
        raise _Refused(MISSING_ATTRIBUTE, f"attribute list cannot be decoded: {exc}") from exc
    if data is None:
        raise _Refused(MISSING_ATTRIBUTE, "the request has no attribute list")
    return data


def _all(items: Any, keyword: str) -> list[str]:
    values = []
    for item in items:
        value = str(item.get(keyword, "") or "").strip()
        if value:
            values.append(value)
    return values


def _kept(data: Dataset) -> dict[str, str]:
    return {keyword: str(data.get(keyword)) for keyword in _KEPT if data.get(keyword) is not None}
