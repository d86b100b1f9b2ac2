"""DICOM documents the archive writes into a study: an Encapsulated PDF (PS3.3 A.45.1) and a
Basic Text SR (A.35.1), filed under the study's own patient and study attributes.

Even length: DICOM values have even lengths, so an odd-length PDF would be stored with one
padding byte (0x00) after its ``%%EOF``. Encapsulated Document Length (0042,0015) records the
document's own length, and `encapsulated_document` cuts the value back to it: what was put in
comes out byte for byte. (The report renderer makes its PDFs even-length, so theirs are stored
unpadded.)
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
BASIC_TEXT_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.11"
PDF_MIME_TYPE = "application/pdf"
MANUFACTURER = "Noctis"


@dataclass(frozen=True)
class StudyAttributes:
    """The patient and study attributes a document is filed under (those the study arrived
    with, so the index files it in the same study of the same patient)."""

    study_instance_uid: str
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_date: str = ""
    study_time: str = ""
    accession_number: str = ""
    study_id: str = ""
    study_description: str = ""
    referring_physician_name: str = ""


@dataclass(frozen=True)
class DocumentIdentity:
    """Where one document instance goes: its UIDs, series and instance numbers, and when it
    was made."""

    sop_instance_uid: str
    series_instance_uid: str
    series_number: int
    instance_number: int
    created_at: datetime
    series_description: str


@dataclass(frozen=True)
class Observer:
    """Who verified (signed) an SR, and for which organisation."""

    name: str
    organization: str
    verified_at: datetime


def encapsulated_pdf(
    study: StudyAttributes, identity: DocumentIdentity, pdf: bytes, *, title: str
) -> bytes:
    """A Part 10 Encapsulated PDF instance holding ``pdf``."""
    if not pdf.startswith(b"%PDF-"):
        raise ValueError("not a PDF document (it does not start with %PDF-)")
    ds = _base(study, identity, ENCAPSULATED_PDF_STORAGE, modality="DOC")
    ds.ConversionType = "WSD"  # workstation: made by the archive, not scanned
    ds.BurnedInAnnotation = "YES"  # the PDF names the patient
    ds.AcquisitionDateTime = _datetime(identity.created_at)
    ds.DocumentTitle = title[:64]
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = PDF_MIME_TYPE
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.add_new(0x00420011, "OB", pdf + b"\x00" * (len(pdf) % 2))
    return _part10(ds)


def encapsulated_document(ds: Dataset) -> bytes:
    """The document inside an Encapsulated PDF data set, without DICOM's padding byte."""
    value = bytes(ds.EncapsulatedDocument)
    length = ds.get("EncapsulatedDocumentLength")
    return value[: int(length)] if length is not None else value


def basic_text_sr(
    study: StudyAttributes,
    identity: DocumentIdentity,
    sections: list[tuple[str, str]],
    *,
    final: bool,
    observer: Observer,
    predecessor_sop_instance_uid: str | None = None,
) -> bytes:
    """A Part 10 Basic Text SR: a Diagnostic Imaging Report container with one TEXT item per
    (heading, text) section. Final reports are VERIFIED by ``observer``; an amendment names
    the SR it replaces (Predecessor Documents Sequence)."""
    ds = _base(study, identity, BASIC_TEXT_SR_STORAGE, modality="SR")
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.PerformedProcedureCodeSequence = []
    ds.CompletionFlag = "COMPLETE" if final else "PARTIAL"
    ds.PreliminaryFlag = "FINAL" if final else "PRELIMINARY"
    ds.VerificationFlag = "VERIFIED" if final else "UNVERIFIED"
    if final:
        verifier = Dataset()
        verifier.VerifyingObserverName = observer.name[:64]
        verifier.VerifyingObserverIdentificationCodeSequence = []
        verifier.VerifyingOrganization = observer.organization[:64]
        verifier.VerificationDateTime = _datetime(observer.verified_at)
        ds.VerifyingObserverSequence = [verifier]
    if predecessor_sop_instance_uid:
        ds.PredecessorDocumentsSequence = [
            _evidence(study, identity.series_instance_uid, predecessor_sop_instance_uid)
        ]
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code("18748-4", "LN", "Diagnostic Imaging Report")]
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = [_text_item(heading, text) for heading, text in sections if text]
    return _part10(ds)


def _base(
    study: StudyAttributes, identity: DocumentIdentity, sop_class: str, *, modality: str
) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names and report text in any script
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = identity.sop_instance_uid
    ds.StudyInstanceUID = study.study_instance_uid
    ds.SeriesInstanceUID = identity.series_instance_uid
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    if study.issuer_of_patient_id:
        ds.IssuerOfPatientID = study.issuer_of_patient_id
    ds.PatientBirthDate = study.patient_birth_date
    ds.PatientSex = study.patient_sex
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.AccessionNumber = study.accession_number
    ds.StudyID = study.study_id
    ds.StudyDescription = study.study_description
    ds.ReferringPhysicianName = study.referring_physician_name
    ds.Modality = modality
    ds.SeriesNumber = identity.series_number
    ds.SeriesDescription = identity.series_description[:64]
    ds.InstanceNumber = identity.instance_number
    ds.Manufacturer = MANUFACTURER
    ds.ContentDate = identity.created_at.strftime("%Y%m%d")
    ds.ContentTime = identity.created_at.strftime("%H%M%S")
    ds.InstanceCreationDate = ds.ContentDate
    ds.InstanceCreationTime = ds.ContentTime
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = identity.sop_instance_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return ds


def _part10(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _datetime(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S")


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue = value
    code.CodingSchemeDesignator = scheme
    code.CodeMeaning = meaning
    return code


# Section headings with a code of their own in the DICOM vocabulary (CID 7002); any other
# section is a finding.
_SECTION_CODES = {
    "IMPRESSION": ("121073", "Impression"),
    "CONCLUSION": ("121077", "Conclusion"),
    "HISTORY": ("121060", "History"),
    "CLINICAL HISTORY": ("121060", "History"),
    "RECOMMENDATION": ("121075", "Recommendation"),
    "RECOMMENDATIONS": ("121075", "Recommendation"),
}


def _text_item(heading: str, text: str) -> Dataset:
    value, meaning = _SECTION_CODES.get(heading.strip().upper(), ("121071", "Finding"))
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = [_code(value, "DCM", meaning)]
    item.TextValue = f"{heading}:\n{text}" if heading and meaning == "Finding" else text
    return item


def _evidence(study: StudyAttributes, series_uid: str, sop_uid: str) -> Dataset:
    instance = Dataset()
    instance.ReferencedSOPClassUID = BASIC_TEXT_SR_STORAGE
    instance.ReferencedSOPInstanceUID = sop_uid
    series = Dataset()
    series.SeriesInstanceUID = series_uid
    series.ReferencedSOPSequence = [instance]
    item = Dataset()
    item.StudyInstanceUID = study.study_instance_uid
    item.ReferencedSeriesSequence = [series]
    return item
