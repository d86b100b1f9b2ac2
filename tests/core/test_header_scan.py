"""The header scanner must give exactly the header pydicom gives, or leave the file to pydicom."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from noctis.dicom.header import (
    InstanceHeader,
    MalformedDicom,
    _read_header,
    header_from_dataset,
    parse_instance_header,
)
from noctis.dicom.header_scan import scan_header
from support.dicomdata import generate_ct_series, sample_dirs, small_ct


def _by_pydicom(path: Path) -> InstanceHeader | str:
    try:
        with path.open("rb") as handle:
            return header_from_dataset(*_read_header(handle))
    except MalformedDicom as exc:
        return f"malformed: {exc}"


def _parsed(path: Path) -> InstanceHeader | str:
    try:
        return parse_instance_header(path)
    except MalformedDicom as exc:
        return f"malformed: {exc}"


def _sample_files() -> list[Path]:
    return sorted(
        path
        for directory in sample_dirs()
        for path in directory.rglob("*")
        if path.is_file() and path.suffix.lower() in ("", ".dcm")
    )


def test_scanned_headers_equal_pydicom_on_its_test_files() -> None:
    scanned = 0
    for path in _sample_files():
        with path.open("rb") as handle:
            if scan_header(handle) is not None:
                scanned += 1
        assert _parsed(path) == _by_pydicom(path), path.name
    # Most of them are plain files the scanner reads itself; the rest went to pydicom.
    assert scanned >= 100


def test_generated_series_are_scanned(tmp_path: Path) -> None:
    for path in generate_ct_series(tmp_path, slices=3, size=32):
        with path.open("rb") as handle:
            assert scan_header(handle) is not None
        assert _parsed(path) == _by_pydicom(path)


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_other_byte_orders_and_vrs(tmp_path: Path, syntax: str) -> None:
    ds = small_ct(PatientName="Doe^Jane", SeriesNumber="7", InstanceNumber=" 12 ")
    ds.file_meta.TransferSyntaxUID = syntax
    item = Dataset()
    item.CodeValue = "T-D0050"
    ds.ProcedureCodeSequence = [item]  # a sequence before the wanted attributes end
    path = tmp_path / "instance.dcm"
    ds.save_as(path, enforce_file_format=True)
    with path.open("rb") as handle:
        assert scan_header(handle) is not None
    header = _parsed(path)
    assert header == _by_pydicom(path)
    assert isinstance(header, InstanceHeader)
    assert (header.series_number, header.instance_number) == (7, 12)
    assert header.rows == ds.Rows


def test_non_ascii_names_are_left_to_pydicom(tmp_path: Path) -> None:
    ds = small_ct(PatientName="Müller^Jürgen", SpecificCharacterSet="ISO_IR 100")
    path = tmp_path / "instance.dcm"
    ds.save_as(path, enforce_file_format=True)
    with path.open("rb") as handle:
        assert scan_header(handle) is None
    header = _parsed(path)
    assert isinstance(header, InstanceHeader)
    assert header.patient_name == "Müller^Jürgen"


def test_truncated_file_is_left_to_pydicom(tmp_path: Path) -> None:
    (source,) = generate_ct_series(tmp_path / "ct", slices=1, size=32)
    data = source.read_bytes()
    path = tmp_path / "truncated.dcm"
    path.write_bytes(data[:300])
    with path.open("rb") as handle:
        assert scan_header(handle) is None
    assert _parsed(path) == _by_pydicom(path)
