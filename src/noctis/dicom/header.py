"""Reading what the index needs from a DICOM file, without loading its pixels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag

from noctis.dicom.errors import MalformedDicom
from noctis.dicom.header_scan import WANTED, CannotScan, scan_header, scanned_value
from noctis.dicom.pixel_checks import check_pixels
from noctis.dicom.structure import DEFLATED, Walked, file_meta, walk_part10
from noctis.dicom.uids import check_uids

DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"

_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")

__all__ = [
    "InstanceHeader",
    "MalformedDicom",
    "parse_instance_header",
    "read_checked_header",
    "read_header",
]
# What a deflated data set's header is read from, as the walk passes it: the index's
# attributes and the character set that decodes them.
_HEADER_TAGS = frozenset(WANTED) | {0x00080005}


@dataclass(frozen=True)
class InstanceHeader:
    """The attributes of one instance that the index stores, as DICOM strings."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    issuer_of_patient_id: str
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
    """The index's fields of a Part 10 file: scanned from its bytes when it allows
    (`noctis.dicom.header_scan`), parsed by pydicom otherwise."""
    if isinstance(source, Path | str):
        with open(source, "rb") as handle:
            return _parse_instance_header(handle)
    source.seek(0)
    return _parse_instance_header(source)


def read_checked_header(source: Path | BinaryIO, *, max_inflated: int = 0) -> InstanceHeader:
    """The index's fields of a received Part 10 file that passes ingest's checks: its
    structure walked to the last byte (`noctis.dicom.structure`), its pixel data against its
    header (`noctis.dicom.pixel_checks`), its UIDs valid (`noctis.dicom.uids`). A deflated data
    set is inflated once, as a stream, never whole; ``max_inflated`` caps it (0: default)."""
    if isinstance(source, Path | str):
        with open(source, "rb") as handle:
            return _read_checked_header(handle, max_inflated)
    return _read_checked_header(source, max_inflated)


def _read_checked_header(handle: BinaryIO, max_inflated: int) -> InstanceHeader:
    walked = walk_part10(handle, capture=_HEADER_TAGS, max_inflated=max_inflated)
    check_pixels(walked)
    header = _header_from_walk(walked)
    check_uids(
        {
            "SOPClassUID": header.sop_class_uid,
            "SOPInstanceUID": header.sop_instance_uid,
            "StudyInstanceUID": header.study_instance_uid,
            "SeriesInstanceUID": header.series_instance_uid,
            "TransferSyntaxUID": header.transfer_syntax_uid,
        }
    )
    return header


def _header_from_walk(walked: Walked) -> InstanceHeader:
    """The header from the values the walk kept: read straight from their bytes as
    `noctis.dicom.header_scan` does, or decoded by pydicom when they need it."""
    values: dict[str, str | int] = {}
    try:
        for tag, (keyword, dictionary_vr) in WANTED.items():
            found = walked.captured.get(tag)
            if found is not None:
                vr, raw = found
                if (vr or dictionary_vr) != dictionary_vr:
                    raise CannotScan("unexpected VR")
                values[keyword] = scanned_value(raw, dictionary_vr, walked.little_endian)
    except (CannotScan, UnicodeDecodeError):
        return header_from_dataset(_captured_dataset(walked), walked.pixel_data_offset)
    return _build_header(
        walked.transfer_syntax,
        lambda keyword: str(values.get(keyword, "")),
        lambda keyword: _int_or_none(values.get(keyword)),
        walked.pixel_data_offset,
    )


def _captured_dataset(walked: Walked) -> Dataset:
    """The top-level elements the walk kept, as pydicom would have read them."""
    elements = {
        Tag(tag): RawDataElement(
            Tag(tag),
            vr.decode() if vr else None,
            len(raw),
            raw,
            0,
            vr is None,
            walked.little_endian,
            True,
            False,
        )
        for tag, (vr, raw) in sorted(walked.captured.items())
        if tag in _HEADER_TAGS
    }
    ds = Dataset(elements)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = walked.transfer_syntax
    return ds


def _parse_instance_header(handle: BinaryIO) -> InstanceHeader:
    scanned = scan_header(handle)
    if scanned is not None:
        values = scanned.values
        return _build_header(
            scanned.transfer_syntax,
            lambda keyword: str(values.get(keyword, "")),
            lambda keyword: _int_or_none(values.get(keyword)),
            scanned.pixel_data_offset,
        )
    handle.seek(0)
    if _transfer_syntax(handle) == DEFLATED:  # never inflated whole: read as it streams
        handle.seek(0)
        walked = walk_part10(handle, capture=_HEADER_TAGS, header_only=True)
        return header_from_dataset(_captured_dataset(walked))
    handle.seek(0)
    ds, offset = _read_header(handle)
    return header_from_dataset(ds, offset)


def _transfer_syntax(handle: BinaryIO) -> str:
    try:
        return file_meta(handle)[1]
    except MalformedDicom:  # not Part 10: pydicom's parse says why
        return ""


def header_from_dataset(ds: Dataset, pixel_data_offset: int | None = None) -> InstanceHeader:
    meta = getattr(ds, "file_meta", None)
    transfer_syntax = str(getattr(meta, "TransferSyntaxUID", "") or "")
    return _build_header(
        transfer_syntax,
        lambda keyword: _text(ds, keyword),
        lambda keyword: _integer(ds, keyword),
        pixel_data_offset,
    )


def _build_header(
    transfer_syntax: str,
    text: Callable[[str], str],
    integer: Callable[[str], int | None],
    pixel_data_offset: int | None,
) -> InstanceHeader:
    if not transfer_syntax:
        raise MalformedDicom("file meta information has no Transfer Syntax UID")
    try:
        missing = [kw for kw in _REQUIRED_UIDS if not text(kw)]
    except Exception as exc:
        raise MalformedDicom(f"cannot decode data set: {exc}") from exc
    if missing:
        raise MalformedDicom(f"missing required attributes: {', '.join(missing)}")
    if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        pixel_data_offset = None  # an offset into the inflated stream means nothing stored
    try:
        return InstanceHeader(
            sop_class_uid=text("SOPClassUID"),
            sop_instance_uid=text("SOPInstanceUID"),
            transfer_syntax_uid=transfer_syntax,
            study_instance_uid=text("StudyInstanceUID"),
            series_instance_uid=text("SeriesInstanceUID"),
            patient_id=text("PatientID"),
            issuer_of_patient_id=text("IssuerOfPatientID"),
            patient_name=text("PatientName"),
            patient_birth_date=_date(text("PatientBirthDate")),
            patient_sex=text("PatientSex"),
            study_date=_date(text("StudyDate")),
            study_time=_time(text("StudyTime")),
            accession_number=text("AccessionNumber"),
            study_id=text("StudyID"),
            study_description=text("StudyDescription"),
            referring_physician_name=text("ReferringPhysicianName"),
            modality=text("Modality"),
            series_number=integer("SeriesNumber"),
            series_description=text("SeriesDescription"),
            body_part_examined=text("BodyPartExamined"),
            series_date=_date(text("SeriesDate")),
            series_time=_time(text("SeriesTime")),
            instance_number=integer("InstanceNumber"),
            rows=integer("Rows"),
            columns=integer("Columns"),
            number_of_frames=integer("NumberOfFrames"),
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
    ISO 2022 escape). Converting through pydicom builds value objects per element: most of a
    small instance's header parse."""
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


def _date(text: str) -> str:
    # ACR-NEMA style "YYYY.MM.DD" is still found in old instances; the index holds YYYYMMDD
    # (and range matching compares those strings). Anything else is not a date to match on.
    value = text.replace(".", "").replace("-", "")
    return value if len(value) == 8 and value.isdigit() else ""


def _time(text: str) -> str:
    # Likewise "HH:MM:SS" -> "HHMMSS"; the index column holds 16 characters (TM's maximum).
    return text.replace(":", "")[:16]


def _int_or_none(value: str | int | None) -> int | None:
    """An IS value as stored (digits), or a US value; None when absent or not an integer."""
    if value is None or isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        return None


def _integer(ds: Dataset, keyword: str) -> int | None:
    raw = _raw_text(ds, keyword)  # IS: the digits as stored
    if raw is not None:
        return _int_or_none(raw)
    value = ds.get(keyword)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
