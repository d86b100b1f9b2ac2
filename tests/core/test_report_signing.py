"""Reports on each index backend: a draft becomes preliminary, final and amended; each signed
version stays readable, moves the study's workflow, raises its notification and is audited;
its PDF and SR are stored in the study through ingest, filed with the study's patient."""

from __future__ import annotations

import hashlib
import io
import subprocess
import threading
from pathlib import Path

import pytest
from alembic import command
from pydicom import dcmread
from sqlalchemy import create_engine, func, inspect, select

from noctis.core.ingest import FacilityRef
from noctis.core.reports import (
    NotTheReader,
    ReportError,
    amend,
    report_of,
    save_draft,
    sign,
    store_pending_documents,
    stored_pdf,
    text_sha256,
    versions_of,
)
from noctis.core.runtime import Runtime
from noctis.core.workflow import Actor, StudyState, advance, ensure_workflow
from noctis.dicom.documents import BASIC_TEXT_SR_STORAGE, ENCAPSULATED_PDF_STORAGE
from noctis.index import accounts
from noctis.index.migrate import alembic_config, upgrade
from noctis.index.models import Instance, Series, Study
from noctis.index.reports import ReportVersion
from noctis.index.workflow import NotificationEvent, StudyWorkflow
from noctis.worker.reports import store_report_documents
from support.incoming import ingest_file

ALICE = Actor("alice", client="10.0.0.5")
BOB = Actor("bob", client="10.0.0.6")
TEXT = "HISTORY: headache\nFINDINGS:\nNo haemorrhage.\n\nIMPRESSION: Normal CT of the head."


@pytest.fixture
def study_pk(runtime: Runtime, default_facility: FacilityRef, make_dicom) -> int:
    path = make_dicom(PatientName="Doe^Jane", PatientID="P77", AccessionNumber="ACC9")
    uid = ingest_file(runtime, default_facility, path).header.study_instance_uid
    with runtime.sessions.begin() as session:
        study = session.scalars(select(Study).where(Study.study_instance_uid == uid)).one()
        ensure_workflow(session, study)
        advance(session, study, StudyState.READY, actor=Actor.system("stable"))
        return study.id


def _pdf_text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    return subprocess.run(
        ["pdftotext", str(path), "-"], capture_output=True, text=True, check=True
    ).stdout


def test_a_report_is_signed_preliminary_final_and_amended_and_every_version_stays(
    runtime: Runtime, study_pk: int, tmp_path: Path
) -> None:
    with runtime.sessions.begin() as session:
        study = session.get(Study, study_pk)
        save_draft(session, study, "FINDINGS: pending", actor=ALICE)
        save_draft(session, study, TEXT, actor=ALICE)  # replaces the draft
        state = session.get(StudyWorkflow, study_pk)
        assert (state.state, state.assignee) == ("in-reading", "alice")  # writing claims it

    first = sign(runtime, study_pk, state="preliminary", actor=ALICE)
    assert (first.number, first.state, first.documents_stored) == (1, "preliminary", True)
    final = sign(runtime, study_pk, state="final", actor=ALICE, expected_sha256=text_sha256(TEXT))
    assert (final.number, final.state, final.text_sha256) == (2, "final", text_sha256(TEXT))
    with runtime.sessions.begin() as session:
        study = session.get(Study, study_pk)
        with pytest.raises(ReportError, match="amend it"):
            save_draft(session, study, "changed", actor=ALICE)
    with runtime.sessions.begin() as session:
        study = session.get(Study, study_pk)
        assert amend(session, study, actor=BOB).draft_text == TEXT  # from the final text
        save_draft(session, study, TEXT + "\nADDENDUM: small cyst.", actor=BOB)
    amended = sign(runtime, study_pk, state="final", actor=BOB)
    assert (amended.number, amended.state) == (3, "amended")

    with runtime.sessions() as session:
        study = session.get(Study, study_pk)
        report = report_of(session, study)
        assert report is not None and report.state == "amended" and report.draft_text is None
        versions = versions_of(session, report)
        assert [(v.number, v.state, v.signed_by) for v in versions] == [
            (1, "preliminary", "alice"),
            (2, "final", "alice"),
            (3, "amended", "bob"),
        ]
        assert versions[1].text == TEXT and versions[2].text.endswith("small cyst.")
        assert session.get(StudyWorkflow, study_pk).state == "amended"
        kinds = session.scalars(select(NotificationEvent.kind).order_by(NotificationEvent.id)).all()
        assert kinds == ["report-final", "report-amended"]
        audit = session.execute(
            select(accounts.AuditRow.actor, accounts.AuditRow.detail)
            .where(accounts.AuditRow.action == "report")
            .order_by(accounts.AuditRow.id)
        ).all()
        assert [(a, d["change"], d.get("version")) for a, d in audit] == [
            ("alice", "signed", 1),
            ("alice", "signed", 2),
            ("bob", "amend-started", 2),
            ("bob", "signed", 3),
        ]
        # Each version stored a PDF and an SR in the study, in series of their own.
        stored = session.execute(
            select(Instance.sop_instance_uid, Instance.sop_class_uid, Series.modality)
            .join(Series, Instance.series_pk == Series.id)
            .where(Series.study_pk == study_pk, Series.modality.in_(("DOC", "SR")))
        ).all()
        assert {(uid, modality) for uid, _, modality in stored} == {
            *((v.pdf_sop_instance_uid, "DOC") for v in versions),
            *((v.sr_sop_instance_uid, "SR") for v in versions),
        }
        assert {c for _, c, _ in stored} == {ENCAPSULATED_PDF_STORAGE, BASIC_TEXT_SR_STORAGE}
        facility_id, pdf_uid, sr_uid = (
            study.facility_id,
            versions[2].pdf_sop_instance_uid,
            versions[2].sr_sop_instance_uid,
        )
        sr_key = session.scalar(
            select(Instance.object_key).where(Instance.sop_instance_uid == sr_uid)
        )
        prior_sr = versions[1].sr_sop_instance_uid

    text = _pdf_text(stored_pdf(runtime, facility_id, pdf_uid), tmp_path)
    assert "AMENDED REPORT (version 3)" in text and "small cyst" in text
    assert (
        "Doe, Jane" in text and "P77" in text and "ACC9" in text and "Signed amended by bob" in text
    )
    sr = dcmread(io.BytesIO(runtime.store.get(sr_key)))
    assert (sr.PatientID, sr.AccessionNumber, sr.VerificationFlag) == ("P77", "ACC9", "VERIFIED")
    assert sr.VerifyingObserverSequence[0].VerifyingObserverName == "bob"
    assert (
        sr.PredecessorDocumentsSequence[0]
        .ReferencedSeriesSequence[0]
        .ReferencedSOPSequence[0]
        .ReferencedSOPInstanceUID
        == prior_sr
    )
    assert "small cyst" in "".join(item.TextValue for item in sr.ContentSequence)


def test_only_the_reader_writes_while_the_study_is_read(runtime: Runtime, study_pk: int) -> None:
    with runtime.sessions.begin() as session:
        save_draft(session, session.get(Study, study_pk), TEXT, actor=ALICE)
    with runtime.sessions.begin() as session, pytest.raises(NotTheReader, match="alice"):
        save_draft(session, session.get(Study, study_pk), "mine now", actor=BOB)
    with pytest.raises(NotTheReader):
        sign(runtime, study_pk, state="final", actor=BOB)
    with pytest.raises(ReportError, match="changed since you read it"):
        sign(runtime, study_pk, state="final", actor=ALICE, expected_sha256=text_sha256("old"))
    with runtime.sessions() as session:  # nothing was signed, the draft is alice's
        report = report_of(session, session.get(Study, study_pk))
        assert report.draft_text == TEXT and report.state == "draft"
        assert versions_of(session, report) == []


def test_nothing_to_sign_and_a_cancelled_study_are_refused(runtime: Runtime, study_pk: int) -> None:
    with pytest.raises(ReportError, match="no draft"):
        sign(runtime, study_pk, state="final", actor=ALICE)
    with runtime.sessions.begin() as session:
        study = session.get(Study, study_pk)
        advance(session, study, StudyState.CANCELLED, actor=BOB)
    with runtime.sessions.begin() as session, pytest.raises(ReportError, match="cancelled"):
        save_draft(session, session.get(Study, study_pk), TEXT, actor=ALICE)


def test_documents_not_stored_at_signing_are_stored_later_identically(
    runtime: Runtime, study_pk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    with runtime.sessions.begin() as session:
        save_draft(session, session.get(Study, study_pk), TEXT, actor=ALICE)
    # The object store is down when the report is signed: the signature still holds.
    monkeypatch.setattr(runtime, "store", _RefusingStore(runtime.store))
    signed = sign(runtime, study_pk, state="final", actor=ALICE)
    assert signed.documents_stored is False
    monkeypatch.setattr(runtime, "store", runtime.store.inner)
    # The worker's job leaves a version signed moments ago to the request that signed it.
    assert store_report_documents(runtime) == 0
    monkeypatch.setattr(runtime.settings, "report_documents_retry_seconds", 0.001)
    assert store_report_documents(runtime) == 1
    with runtime.sessions.begin() as session:  # as if it had failed again: the plain sweep
        session.get(ReportVersion, signed.version_id).documents_stored_at = None
    assert store_pending_documents(runtime) == 1
    assert store_pending_documents(runtime) == 0
    with runtime.sessions() as session:
        version = session.get(ReportVersion, signed.version_id)
        assert version.documents_stored_at is not None
        assert session.scalar(
            select(Instance.id).where(Instance.sop_instance_uid == version.pdf_sop_instance_uid)
        )
        facility_id = session.get(Study, study_pk).facility_id
    pdf = stored_pdf(runtime, facility_id, signed.pdf_sop_instance_uid)
    assert hashlib.sha256(pdf).hexdigest() == version.pdf_sha256


class _RefusingStore:
    """The object store with its writes failing (a full disk, an S3 outage)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def incoming(self) -> object:
        raise OSError("No space left on device")

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_two_signatures_at_once_make_one_version(runtime: Runtime, study_pk: int) -> None:
    """A double click, or two tabs: the report row is locked while it is signed."""
    with runtime.sessions.begin() as session:
        save_draft(session, session.get(Study, study_pk), TEXT, actor=ALICE)
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def sign_final() -> None:
        barrier.wait()
        try:
            sign(runtime, study_pk, state="final", actor=ALICE)
            outcomes.append("signed")
        except ReportError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=sign_final) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == ["signed", "there is no draft to sign"]
    with runtime.sessions() as session:
        report = report_of(session, session.get(Study, study_pk))
        assert [v.number for v in versions_of(session, report)] == [1]


def test_migration_0014_goes_down_and_up_again(runtime: Runtime) -> None:
    url = runtime.settings.resolved_database_url()
    runtime.close()

    def tables() -> set[str]:
        engine = create_engine(url)
        try:
            return set(inspect(engine).get_table_names())
        finally:
            engine.dispose()

    command.downgrade(alembic_config(url), "0012")
    assert not tables() & {"report", "report_version", "study_attachment"}
    upgrade(url)
    assert {"report", "report_version", "report_template", "report_snippet"} <= tables()
    assert "study_attachment" in tables()


def test_a_reports_own_sr_is_not_an_analysis_result(runtime: Runtime, study_pk: int) -> None:
    """The results scan passes over the Basic Text SR a signed report stores in the study: the
    worklist must not show the radiologist's own report as a result of automated analysis."""
    from noctis.core.results import scan_results
    from noctis.index.results import AnalysisResult, ResultScan
    from support import wait

    with runtime.sessions.begin() as session:
        save_draft(session, session.get(Study, study_pk), TEXT, actor=ALICE)
    sign(runtime, study_pk, state="final", actor=ALICE)
    with runtime.sessions() as session:
        last = session.scalar(select(func.max(Instance.id)))

    def scanned_past_the_report() -> bool:
        scan_results(runtime)
        with runtime.sessions() as session:
            return (session.scalar(select(ResultScan.scanned_to)) or 0) >= last

    wait.until(scanned_past_the_report, timeout=20, what="the results scan past the report")
    with runtime.sessions() as session:
        assert session.scalars(select(AnalysisResult.sop_instance_uid)).all() == []
