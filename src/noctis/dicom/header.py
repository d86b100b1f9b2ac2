"""Reading what the index needs from a DICOM file, without loading its pixels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"

_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


class MalformedDicom(ValueError):
    """The bytes are not a DICOM data set the archive can index."""


@dataclass(frozen=True)
class InstanceHeader:
    """The attributes of one instance that the index stores, as DICOM strings."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician_name: str
    modality: str
    series_number: int | None
    series_description: str
    body_part_examined: str
    series_date: str
    series_time: str
    instance_number: int | None
    rows: int | None
    columns: int | None
    number_of_frames: int | None
    pixel_data_offset: int | None


def read_header(source: Path | BinaryIO) -> tuple[Dataset, int | None]:
    """Parse a Part 10 file up to its pixel data; return the data set and the pixel data offset."""
    if isinstance(source, Path | str):
        with open(source, "rb") as handle:
            return _read_header(handle)
    source.seek(0)
    return _read_header(source)


def _read_header(handle: BinaryIO) -> tuple[Dataset, int | None]:
    try:
        ds = dcmread(handle, stop_before_pixels=True, force=False)
    except InvalidDicomError as exc:
        raise MalformedDicom(f"not a DICOM Part 10 file: {exc}") from exc
    except Exception as exc:  # pydicom raises many kinds on corrupt input
        raise MalformedDicom(f"cannot parse DICOM data set: {type(exc).__name__}: {exc}") from exc
    # dcmread leaves the handle at the Pixel Data tag when it stopped there.
    position = handle.tell()
    tag = handle.read(4)
    has_pixels = len(tag) == 4 and tag in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")
    return ds, position if has_pixels else None


def parse_instance_header(source: Path | BinaryIO) -> InstanceHeader:
    ds, offset = read_header(source)
    return header_from_dataset(ds, offset)


def header_from_dataset(ds: Dataset, pixel_data_offset: int | None = None) -> InstanceHeader:
    meta = getattr(ds, "file_meta", None)
    transfer_syntax = str(getattr(meta, "TransferSyntaxUID", "") or "")
    if not transfer_syntax:
        raise MalformedDicom("file meta information has no Transfer Syntax UID")
    try:
        missing = [kw for kw in _REQUIRED_UIDS if not _text(ds, kw)]
    except Exception as exc:
        raise MalformedDicom(f"cannot decode data set: {exc}") from exc
    if missing:
        raise MalformedDicom(f"missing required attributes: {', '.join(missing)}")
    if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        pixel_data_offset = None  # an offset into the inflated stream means nothing stored
    try:
        return InstanceHeader(
            sop_class_uid=_text(ds, "SOPClassUID"),
            sop_instance_uid=_text(ds, "SOPInstanceUID"),
            transfer_syntax_uid=transfer_syntax,
            study_instance_uid=_text(ds, "StudyInstanceUID"),
            series_instance_uid=_text(ds, "SeriesInstanceUID"),
            patient_id=_text(ds, "PatientID"),
            patient_name=_text(ds, "PatientName"),
            patient_birth_date=_date(ds, "PatientBirthDate"),
            patient_sex=_text(ds, "PatientSex"),
            study_date=_date(ds, "StudyDate"),
            study_time=_time(ds, "StudyTime"),
            accession_number=_text(ds, "AccessionNumber"),
            study_id=_text(ds, "StudyID"),
            study_description=_text(ds, "StudyDescription"),
            referring_physician_name=_text(ds, "ReferringPhysicianName"),
            modality=_text(ds, "Modality"),
            series_number=_integer(ds, "SeriesNumber"),
            series_description=_text(ds, "SeriesDescription"),
            body_part_examined=_text(ds, "BodyPartExamined"),
            series_date=_date(ds, "SeriesDate"),
            series_time=_time(ds, "SeriesTime"),
            instance_number=_integer(ds, "InstanceNumber"),
            rows=_integer(ds, "Rows"),
            columns=_integer(ds, "Columns"),
            number_of_frames=_integer(ds, "NumberOfFrames"),
            pixel_data_offset=pixel_data_offset,
        )
    except MalformedDicom:
        raise
    except Exception as exc:
        raise MalformedDicom(f"cannot decode data set: {type(exc).__name__}: {exc}") from exc


# Text VRs whose stored bytes are the value, when they are plain ASCII.
_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI"}
)


def _raw_text(ds: Dataset, keyword: str) -> str | None:
    """The value of a text element straight from its bytes, or None when pydicom must decode
    it (not read raw, not a text VR, or bytes a character set could change: non-ASCII or an
    ISO 2022 escape). Converting through pydicom costs ~20 us an element, most of a small
    instance's header parse."""
    tag = tag_for_keyword(keyword)
    if tag is None or tag not in ds:
        return None
    element = ds.get_item(tag)
    if not isinstance(element, RawDataElement):
        return None
    vr = element.VR or dictionary_VR(tag)
    value = element.value
    if vr not in _TEXT_VRS or not isinstance(value, bytes) or not value.isascii():
        return None
    if b"\x1b" in value:
        return None
    text = value.decode("ascii").replace("\x00", "")
    if "\\" in text:
        return "\\".join(part.strip() for part in text.split("\\")).strip()
    return text.strip()


def _text(ds: Dataset, keyword: str) -> str:
    raw = _raw_text(ds, keyword)
    if raw is not None:
        return raw
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip().replace("\x00", "")


def _date(ds: Dataset, keyword: str) -> str:
    # ACR-NEMA style "YYYY.MM.DD" is still found in old instances; the index holds YYYYMMDD
    # (and range matching compares those strings). Anything else is not a date to match on.
    value = _text(ds, keyword).replace(".", "").replace("-", "")
    return value if len(value) == 8 and value.isdigit() else ""


def _time(ds: Dataset, keyword: str) -> str:
    # Likewise "HH:MM:SS" -> "HHMMSS"; the index column holds 16 characters (TM's maximum).
    return _text(ds, keyword).replace(":", "")[:16]


def _integer(ds: Dataset, keyword: str) -> int | None:
    raw = _raw_text(ds, keyword)  # IS: the digits as stored
    if raw is not None:
        try:
            return int(raw)
        except ValueError:
            return None
    value = ds.get(keyword)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
