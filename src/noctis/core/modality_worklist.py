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

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

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


Value = Callable[[Order, str], Any]  # (order, facility display name) -> the value
_SPS_TAG = 0x00400100  # Scheduled Procedure Step Sequence
_CHARSET_TAG = 0x00080005


def _codes(order: Order, _: str) -> Sequence:
    return Sequence(_code(order))


def _no_items(order: Order, _: str) -> Sequence:
    return Sequence()


def _column(name: str) -> Value:
    return lambda order, _: getattr(order, name)


# PS3.4 Table K.6-1: what the archive knows of each return key, at the top level ...
_TOP: dict[int, tuple[str, Value]] = {
    0x00080050: ("SH", _column("accession_number")),
    0x00080080: ("LO", lambda order, facility: facility),  # Institution Name
    0x00080090: ("PN", _column("referring_physician_name")),
    0x00100010: ("PN", _column("patient_name")),
    0x00100020: ("LO", _column("patient_id")),
    0x00100021: ("LO", _column("issuer_of_patient_id")),
    0x00100030: ("DA", _column("patient_birth_date")),
    0x00100040: ("CS", _column("patient_sex")),
    0x0020000D: ("UI", _column("study_instance_uid")),
    0x00081110: ("SQ", _no_items),  # Referenced Study Sequence
    0x00081120: ("SQ", _no_items),  # Referenced Patient Sequence
    0x00321060: ("LO", _column("requested_procedure_description")),
    0x00321064: ("SQ", _codes),  # Requested Procedure Code Sequence
    0x00401001: ("SH", _column("requested_procedure_id")),
    0x00401003: ("SH", lambda order, _: _dicom_priority(order.priority)),
}
# ... and in the Scheduled Procedure Step Sequence's item.
_STEP: dict[int, tuple[str, Value]] = {
    0x00080060: ("CS", _column("modality")),
    0x00400001: ("AE", _column("scheduled_station_ae_title")),
    0x00400002: ("DA", _column("scheduled_date")),
    0x00400003: ("TM", _column("scheduled_time")),
    0x00400006: ("PN", lambda order, _: ""),  # Scheduled Performing Physician's Name
    0x00400007: ("LO", _column("requested_procedure_description")),
    0x00400008: ("SQ", _codes),  # Scheduled Protocol Code Sequence
    0x00400009: ("SH", _column("scheduled_procedure_step_id")),
    0x00400010: ("SH", lambda order, _: ""),  # Scheduled Station Name
    0x00400011: ("SH", lambda order, _: ""),  # Scheduled Procedure Step Location
    0x00400020: ("CS", lambda order, _: "SCHEDULED"),
}


def worklist_item(order: Order, request: Dataset, *, facility_name: str = "") -> Dataset:
    """The answer for ``order``: the request's keys with the order's values (keys the
    archive does not hold come back empty; an empty Scheduled Procedure Step Sequence in the
    request asks for every attribute of its item)."""
    answer = Dataset()
    answer.add(DataElement(_CHARSET_TAG, "CS", RESPONSE_CHARSET))
    for element in request:
        tag = element.tag
        if tag == _CHARSET_TAG or tag.is_private or tag.element == 0:
            continue
        if tag == _SPS_TAG:
            items = element.value if element.VR == "SQ" else None
            wanted = [e.tag for e in items[0]] if items else list(_STEP)
            answer.add(
                DataElement(tag, "SQ", Sequence([_fill(_STEP, wanted, order, facility_name)]))
            )
        else:
            answer.add(_element(_TOP, tag, element, order, facility_name))
    return answer


def _fill(
    table: dict[int, tuple[str, Value]], tags: list[Any], order: Order, facility: str
) -> Dataset:
    item = Dataset()
    for tag in tags:
        item.add(_element(table, tag, None, order, facility))
    return item


def _element(
    table: dict[int, tuple[str, Value]],
    tag: Any,
    asked: DataElement | None,
    order: Order,
    facility: str,
) -> DataElement:
    known = table.get(int(tag))
    if known is not None:
        vr, value = known
        return DataElement(tag, vr, value(order, facility))
    vr = _vr(tag, asked)
    return DataElement(tag, vr, Sequence() if vr == "SQ" else None)


def _vr(tag: Any, asked: DataElement | None) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return str(asked.VR if asked is not None and asked.VR else "UN")


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
