"""Small analysis results built by hand with pydicom: SR documents and segmentations.

``sr(...)`` makes a Comprehensive SR (or another SR class) whose content tree is given as
nested tuples; ``seg(...)`` a binary Segmentation with one frame per segment. Both are
written as Part 10 files (explicit VR little endian) to ``directory``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"

# (SCHEME, VALUE, MEANING)
CRITICAL_HEADING = ("LN", "73568-8", "Communication of Critical Results")
FINDINGS = ("DCM", "121070", "Findings")
FINDING = ("DCM", "121071", "Finding")
IMAGING_REPORT = ("DCM", "126000", "Imaging Measurement Report")
LEVEL_OF_SIGNIFICANCE = ("DCM", "121403", "Level of Significance")
HIGHLY_SIGNIFICANT = ("SCT", "371926006", "Highly significant")
HEMORRHAGE = ("SCT", "50960005", "Hemorrhage")
NODULE = ("SCT", "27925004", "Nodule")
PRESENT = ("SCT", "52101004", "Present")
ABSENT = ("SCT", "2667000", "Absent")


def code(triple: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.CodingSchemeDesignator, item.CodeValue, item.CodeMeaning = triple
    return item


def text(name: tuple[str, str, str], value: str) -> Dataset:
    item = _item("TEXT", name)
    item.TextValue = value
    return item


def coded(name: tuple[str, str, str], value: tuple[str, str, str]) -> Dataset:
    item = _item("CODE", name)
    item.ConceptCodeSequence = Sequence([code(value)])
    return item


def container(name: tuple[str, str, str], *children: Dataset) -> Dataset:
    item = _item("CONTAINER", name)
    item.ContinuityOfContent = "SEPARATE"
    item.ContentSequence = Sequence(list(children))
    return item


def _item(value_type: str, name: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = value_type
    item.ConceptNameCodeSequence = Sequence([code(name)])
    return item


def _common(sop_class: str, study_uid: str, modality: str, **attributes: Any) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "P001"
    ds.PatientName = "Doe^Jane"
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ds.Manufacturer = "Noctis tests"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def sr(
    directory: Path,
    study_uid: str,
    *content: Dataset,
    title: tuple[str, str, str] = IMAGING_REPORT,
    sop_class: str = COMPREHENSIVE_SR,
    **attributes: Any,
) -> Path:
    ds = _common(sop_class, study_uid, "SR", **attributes)
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([code(title)])
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ContentDate, ds.ContentTime = "20240102", "101600"
    ds.ContentSequence = Sequence(list(content))
    return _write(directory, ds)


def seg(
    directory: Path,
    study_uid: str,
    segments: list[tuple[str, tuple[str, str, str]]],
    *,
    size: int = 8,
    **attributes: Any,
) -> Path:
    """A binary SEG of ``size`` x ``size`` pixels, one frame per (label, property type)."""
    ds = _common(SEGMENTATION, study_uid, "SEG", **attributes)
    ds.ContentLabel = "AI_SEG"
    ds.SegmentationType = "BINARY"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit = 0
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = len(segments)
    items = []
    for number, (label, property_type) in enumerate(segments, start=1):
        segment = Dataset()
        segment.SegmentNumber = number
        segment.SegmentLabel = label
        segment.SegmentAlgorithmType = "AUTOMATIC"
        segment.SegmentAlgorithmName = "noctis-test"
        segment.SegmentedPropertyCategoryCodeSequence = Sequence(
            [code(("SCT", "49755003", "Morphologically Altered Structure"))]
        )
        segment.SegmentedPropertyTypeCodeSequence = Sequence([code(property_type)])
        items.append(segment)
    ds.SegmentSequence = Sequence(items)
    frame_bytes = (size * size + 7) // 8
    ds.PixelData = b"\x55" * (frame_bytes * len(segments) + (frame_bytes * len(segments)) % 2)
    return _write(directory, ds)


def _write(directory: Path, ds: Dataset) -> Path:
    path = directory / f"{ds.Modality.lower()}-{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
