"""The Modality Worklist (PS3.4 Annex K): a modality's C-FIND for its scheduled steps.

`matching_orders` reads a C-FIND identifier of the Modality Worklist Information Model and
finds the caller's facility's scheduled orders. Matching keys (any other key is returned,
not matched):

- Scheduled Procedure Step Sequence item: ScheduledStationAETitle, Modality,
  ScheduledProcedureStepStartDate and ScheduledProcedureStepStartTime (single values or
  ranges such as ``20261207-20261208``), ScheduledProcedureStepID;
- PatientName (``*``/``?`` wildcards, ignoring case), PatientID, AccessionNumber,
  RequestedProcedureID, StudyInstanceUID.

Only orders still ``scheduled`` are answered (one in progress was taken by a modality
already). `worklist_item` writes an order as the answer, limited to the keys the request
asked for (PS3.4 K.6.1.2.2: the return keys), values the order lacks returned empty.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from sqlalchemy import select
from sqlalchemy.orm import Session

from noctis.core.workflow import Priority
from noctis.index.orders import Order
from noctis.index.query import QueryError, value_condition

MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
RESPONSE_CHARSET = "ISO_IR 192"
# Answers to one query, at most: a modality asking for "everything" gets the first ones by
# scheduled time (a worklist of more is not read by anyone at a console).
MAX_ANSWERS = 1000

# keyword -> (Order column, VR), for keys matched at the top level of the identifier
_TOP_KEYS = {
    "PatientName": (Order.patient_name, "PN"),
    "PatientID": (Order.patient_id, "LO"),
    "AccessionNumber": (Order.accession_number, "SH"),
    "RequestedProcedureID": (Order.requested_procedure_id, "SH"),
    "StudyInstanceUID": (Order.study_instance_uid, "UI"),
}
# ... and inside the Scheduled Procedure Step Sequence's item
_STEP_KEYS = {
    "ScheduledStationAETitle": (Order.scheduled_station_ae_title, "AE"),
    "Modality": (Order.modality, "CS"),
    "ScheduledProcedureStepStartDate": (Order.scheduled_date, "DA"),
    "ScheduledProcedureStepStartTime": (Order.scheduled_time, "TM"),
    "ScheduledProcedureStepID": (Order.scheduled_procedure_step_id, "SH"),
}


@dataclass(frozen=True)
class WorklistQuery:
    top: dict[str, str] = field(default_factory=dict)
    step: dict[str, str] = field(default_factory=dict)

    @property
    def keys(self) -> dict[str, str]:
        return {**self.top, **self.step}


def parse_query(identifier: Dataset) -> WorklistQuery:
    """The matching keys of a worklist identifier (`QueryError` for a malformed one)."""
    top = _values(identifier, _TOP_KEYS)
    step: dict[str, str] = {}
    if "ScheduledProcedureStepSequence" in identifier:
        items = identifier.ScheduledProcedureStepSequence or []
        if len(items) > 1:
            raise QueryError("Scheduled Procedure Step Sequence holds one item in a query")
        if items:
            step = _values(items[0], _STEP_KEYS)
    return WorklistQuery(top, step)


def _values(data: Dataset, keys: Iterable[str]) -> dict[str, str]:
    found = {}
    for keyword in keys:
        value = data.get(keyword)
        if value is None:
            continue
        text = str(value).strip()
        if text and text != "*":
            found[keyword] = text
    return found


def matching_orders(
    session: Session, facility_id: int, query: WorklistQuery, *, limit: int = MAX_ANSWERS
) -> list[Order]:
    statement = select(Order).where(Order.facility_id == facility_id, Order.status == "scheduled")
    for keyword, value in query.top.items():
        column, vr = _TOP_KEYS[keyword]
        statement = statement.where(value_condition(column, value, vr))
    for keyword, value in query.step.items():
        column, vr = _STEP_KEYS[keyword]
        statement = statement.where(value_condition(column, value, vr))
    statement = statement.order_by(Order.scheduled_date, Order.scheduled_time, Order.id)
    return list(session.scalars(statement.limit(limit)))


def full_item(order: Order, *, facility_name: str = "") -> Dataset:
    """Every worklist attribute the archive knows of ``order`` (PS3.4 Table K.6-1)."""
    ds = Dataset()
    ds.SpecificCharacterSet = RESPONSE_CHARSET
    ds.AccessionNumber = order.accession_number
    ds.ReferringPhysicianName = order.referring_physician_name
    ds.PatientName = order.patient_name
    ds.PatientID = order.patient_id
    ds.IssuerOfPatientID = order.issuer_of_patient_id
    ds.PatientBirthDate = order.patient_birth_date
    ds.PatientSex = order.patient_sex
    ds.StudyInstanceUID = order.study_instance_uid
    ds.RequestedProcedureID = order.requested_procedure_id
    ds.RequestedProcedureDescription = order.requested_procedure_description
    ds.RequestedProcedurePriority = _dicom_priority(order.priority)
    ds.RequestedProcedureCodeSequence = Sequence(_code(order))
    ds.ReferencedStudySequence = Sequence()
    ds.ReferencedPatientSequence = Sequence()
    ds.InstitutionName = facility_name
    step = Dataset()
    step.ScheduledStationAETitle = order.scheduled_station_ae_title
    step.ScheduledProcedureStepStartDate = order.scheduled_date
    step.ScheduledProcedureStepStartTime = order.scheduled_time
    step.Modality = order.modality
    step.ScheduledPerformingPhysicianName = ""
    step.ScheduledProcedureStepDescription = order.requested_procedure_description
    step.ScheduledProcedureStepID = order.scheduled_procedure_step_id
    step.ScheduledProcedureStepStatus = "SCHEDULED"
    step.ScheduledStationName = ""
    step.ScheduledProcedureStepLocation = ""
    step.ScheduledProtocolCodeSequence = Sequence(_code(order))
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


def worklist_item(order: Order, request: Dataset, *, facility_name: str = "") -> Dataset:
    """The answer for ``order``: the request's keys with the order's values."""
    return _answer(full_item(order, facility_name=facility_name), request, top=True)


def _answer(full: Dataset, request: Dataset, *, top: bool) -> Dataset:
    answer = Dataset()
    if top:
        answer.SpecificCharacterSet = RESPONSE_CHARSET
    for element in request:
        tag = element.tag
        if tag == 0x00080005 or tag.is_private or tag.element == 0:
            continue
        if tag in full:
            mine = full[tag]
            if mine.VR == "SQ" and element.VR == "SQ" and element.value and mine.value:
                answer.add(
                    DataElement(
                        tag, "SQ", Sequence([_answer(mine.value[0], element.value[0], top=False)])
                    )
                )
            else:
                answer.add(mine)
        else:
            answer.add(DataElement(tag, _vr(element), [] if element.VR == "SQ" else None))
    return answer


def _vr(element: DataElement) -> str:
    try:
        return str(dictionary_VR(element.tag))
    except KeyError:
        return str(element.VR or "UN")


def _code(order: Order) -> list[Dataset]:
    if not order.procedure_code_value:
        return []
    code = Dataset()
    code.CodeValue = order.procedure_code_value
    code.CodingSchemeDesignator = order.procedure_code_scheme or "L"
    code.CodeMeaning = order.procedure_code_meaning or order.requested_procedure_description
    return [code]


def _dicom_priority(rank: int) -> str:
    return {Priority.STAT: "STAT", Priority.URGENT: "HIGH"}.get(Priority(rank), "ROUTINE")
