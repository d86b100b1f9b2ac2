"""A signed report travels with the images: its Encapsulated PDF and Basic Text SR come back
over C-GET (dcmtk getscu) like any instance of the study, and the PDF inside is byte for byte
the one rendered (ReportLab's output is made even-length, so DICOM adds no padding byte)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydicom import dcmread
from scp_support import AE_TITLE, MODALITY, RunningScp
from sqlalchemy import select

from noctis.core.ingest import FacilityRef
from noctis.core.reports import render_version, save_draft, sign
from noctis.core.workflow import Actor
from noctis.dicom.documents import (
    BASIC_TEXT_SR_STORAGE,
    ENCAPSULATED_PDF_STORAGE,
    encapsulated_document,
)
from noctis.index.models import Study
from noctis.index.reports import ReportVersion
from noctis.scp.client import store_files
from support import dcmtk
from support.dicomdata import generate_ct_series
from support.ports import LOOPBACK

READER = Actor("dr-house", client="127.0.0.1")


def test_getscu_retrieves_the_report_pdf_byte_identical_to_what_was_rendered(
    scp: RunningScp, facility: FacilityRef, tmp_path: Path
) -> None:
    runtime = scp.runtime
    series = generate_ct_series(tmp_path / "ct", slices=2, size=16)
    assert store_files(LOOPBACK, scp.port, series, AE_TITLE, MODALITY).succeeded == 2
    uid = str(dcmread(series[0], stop_before_pixels=True).StudyInstanceUID)
    with runtime.sessions.begin() as session:
        study = session.scalars(select(Study).where(Study.study_instance_uid == uid)).one()
        study_pk = study.id
        save_draft(
            session, study, "FINDINGS:\nNo acute finding.\n\nIMPRESSION: Normal.", actor=READER
        )
    signed = sign(runtime, study_pk, state="final", actor=READER)
    assert signed.documents_stored
    with runtime.reader() as session:
        version = session.get(ReportVersion, signed.version_id)
        rendered = render_version(session, version).pdf
        recorded = version.pdf_sha256
    assert hashlib.sha256(rendered).hexdigest() == recorded  # what was rendered at signing

    result = dcmtk.getscu(
        scp.port,
        {"StudyInstanceUID": uid},
        level="STUDY",
        calling=MODALITY,
        called=AE_TITLE,
        output_dir=tmp_path / "got",
    )
    assert result.ok, result.output[-3000:]
    got = {str(ds.SOPClassUID): ds for ds in map(dcmread, (tmp_path / "got").iterdir())}
    assert set(got) >= {ENCAPSULATED_PDF_STORAGE, BASIC_TEXT_SR_STORAGE}
    document = got[ENCAPSULATED_PDF_STORAGE]
    assert document.SOPInstanceUID == signed.pdf_sop_instance_uid
    assert bytes(document.EncapsulatedDocument) == rendered == encapsulated_document(document)
    assert (document.Modality, document.PatientID) == ("DOC", dcmread(series[0]).PatientID)
    assert got[BASIC_TEXT_SR_STORAGE].VerificationFlag == "VERIFIED"
