"""C-FIND identifiers written directly are the bytes pydicom writes (plain_data_set)."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

from noctis.dicom.plain_data_set import Element, encode_plain
from noctis.index.query import Level
from noctis.scp.identifiers import identifier_dataset, parse_identifier, response_elements

VALUES = {
    "PatientName": "Müller^Jürgen",  # UTF-8 under ISO_IR 192
    "PatientID": "P1",
    "PatientBirthDate": "19700101",
    "PatientSex": "M",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1",  # odd length: padded with a NUL
    "StudyDate": "20240110",
    "StudyTime": "083000.5",
    "AccessionNumber": "A1",
    "StudyDescription": "CT CHEST",
    "ModalitiesInStudy": "CT\\PR\\SR",  # several values
    "NumberOfStudyRelatedSeries": 3,
    "NumberOfStudyRelatedInstances": 301,
    "SeriesInstanceUID": "1.2.3.4",
    "Modality": "CT",
    "SeriesNumber": 2,
    "SOPInstanceUID": "1.2.3.4.5",
    "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
    "InstanceNumber": 17,
    "Rows": 512,
    "Columns": 512,
    "NumberOfFrames": None,
    "ReferringPhysicianName": "",
}


def _request(level: str, keywords: list[str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword in keywords:
        setattr(ds, keyword, None)
    return ds


REQUESTS = {
    Level.STUDY: [
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyDescription",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "ReferringPhysicianName",
        "RetrieveAETitle",
        "InstanceAvailability",
        "PatientComments",  # not in the index: comes back empty
    ],
    Level.SERIES: ["Modality", "SeriesNumber", "StudyInstanceUID", "SeriesInstanceUID"],
    Level.IMAGE: ["SOPClassUID", "InstanceNumber", "Rows", "Columns", "NumberOfFrames"],
}


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
@pytest.mark.parametrize("level", list(REQUESTS), ids=[level.value for level in REQUESTS])
def test_response_identifiers_equal_pydicom(level: Level, implicit: bool) -> None:
    parsed = parse_identifier(_request(level.value, REQUESTS[level]), "STUDY")
    elements = response_elements(parsed, VALUES, "NOCTIS")
    theirs = encode(identifier_dataset(elements), implicit, True, False)
    assert encode_plain(elements, implicit_vr=implicit) == theirs


@pytest.mark.parametrize(
    "element",
    [
        (0x00081110, "SQ", None),  # a sequence key: pydicom writes it
        (0x00091001, "OB", b"\x01"),  # binary data
        (0x00080020, "DA", ["20240101"]),  # not a plain value
        (0x00100010, "PN", "x" * 70000),  # too long for a 2-byte length
        (0x00080050, "SH", object()),
    ],
    ids=["sequence", "binary", "list", "too-long", "other"],
)
def test_what_is_not_plain_is_left_to_pydicom(element: Element) -> None:
    assert encode_plain([element], implicit_vr=False) is None
