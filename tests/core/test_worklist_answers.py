"""A worklist answer as PS3.4 K.6 asks: the request's keys with the order's values, unknown
keys empty, an empty Scheduled Procedure Step Sequence answered with its whole item, and a
malformed query refused with a reason."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pynetdicom.dsutils import decode, encode

from noctis.core.modality_worklist import parse_query, worklist_item
from noctis.index.orders import Order
from noctis.index.query import QueryError


def an_order() -> Order:
    return Order(
        accession_number="A1",
        patient_id="P1",
        issuer_of_patient_id="",
        patient_name="Müller^Jürgen",
        patient_birth_date="19700101",
        patient_sex="M",
        requested_procedure_id="A1",
        requested_procedure_description="CT head",
        procedure_code_value="CTHEAD",
        procedure_code_scheme="99LOCAL",
        procedure_code_meaning="CT of the head",
        scheduled_procedure_step_id="A1",
        modality="CT",
        scheduled_station_ae_title="CT1",
        scheduled_date="20261207",
        scheduled_time="093000",
        priority=2,
        referring_physician_name="House^Gregory",
        study_instance_uid="1.2.3.4",
        status="scheduled",
    )


def test_an_empty_step_sequence_gets_the_whole_item_and_unknown_keys_come_back_empty() -> None:
    request = Dataset()
    request.PatientName = ""
    request.RequestedProcedurePriority = ""
    request.RequestedProcedureCodeSequence = []
    request.OtherPatientIDs = ""  # a key the archive does not hold
    request.ScheduledProcedureStepSequence = []
    answer = worklist_item(an_order(), request, facility_name="North")
    # encoded and decoded as a peer reads it (UTF-8 names)
    back = decode(DicomBytesIO(encode(answer, False, True)), False, True)
    assert str(back.PatientName) == "Müller^Jürgen"
    assert back.RequestedProcedurePriority == "STAT"
    assert back.RequestedProcedureCodeSequence[0].CodeValue == "CTHEAD"
    assert back.OtherPatientIDs == ""
    assert "AccessionNumber" not in back
    step = back.ScheduledProcedureStepSequence[0]
    assert (step.Modality, step.ScheduledStationAETitle, step.ScheduledProcedureStepStatus) == (
        "CT",
        "CT1",
        "SCHEDULED",
    )
    assert step.ScheduledProtocolCodeSequence[0].CodeMeaning == "CT of the head"
    assert step.ScheduledProcedureStepStartTime == "093000"


def test_a_query_with_two_step_items_is_refused() -> None:
    request = Dataset()
    request.ScheduledProcedureStepSequence = [Dataset(), Dataset()]
    with pytest.raises(QueryError, match="one item"):
        parse_query(request)
    request.ScheduledProcedureStepSequence = [Dataset()]
    request.ScheduledProcedureStepSequence[0].Modality = "MR"
    request.PatientName = "*"
    assert parse_query(request).keys == {"Modality": "MR"}
