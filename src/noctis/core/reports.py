"""A study's report: the draft saved as the radiologist types, signing (preliminary, final),
amendments, and the documents each signed version stores in the study.

Rules:
- One report per study. While the study is being read (arrived, ready, in-reading,
  preliminary) only its assignee writes and signs; a radiologist who starts writing an
  unassigned study claims it (atomically, `noctis.core.workflow.assign`), so two cannot write
  the same report. Once final, any radiologist of the facility may amend it (the original
  reader may be away); the amendment is signed and audited under their name.
- Saving a draft replaces the draft only; signed versions are never changed. Draft saves are
  not audited one by one (they come several times a minute): the signed version records its
  author and its text, and the sign event is audited.
- Signing (the caller has re-authenticated the signer: `noctis.api.rest.reports`) adds an
  immutable version (text, SHA-256 of the text, author, signer, time, the SOP Instance UIDs
  of its PDF and SR) and moves the workflow (preliminary, final, amended) and raises
  report-final / report-amended, all in one transaction with its audit entry. Then the PDF and
  the SR are stored in the study through ingest; if that fails the version stays signed and
  `store_pending_documents` (a periodic job) stores them later, rendered identically.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

from noctis.core.audit import record_change
from noctis.core.documents import store_document, study_attributes
from noctis.core.ingest import FacilityRef, IngestError
from noctis.core.notifications import NotificationKind, notify
from noctis.core.report_pdf import ReportContent, render_report_pdf, sections
from noctis.core.runtime import Runtime
from noctis.core.workflow import (
    OPEN_STATES,
    Actor,
    AlreadyAssigned,
    StudyState,
    advance,
    assign,
    describe_study,
    ensure_workflow,
)
from noctis.dicom.documents import (
    DocumentIdentity,
    Observer,
    StudyAttributes,
    basic_text_sr,
    encapsulated_document,
    encapsulated_pdf,
)
from noctis.index.models import Facility, Instance, Study, utcnow
from noctis.index.reports import Report, ReportVersion

log = logging.getLogger(__name__)

REPORT_AUDIT_ACTION = "report"
MAX_TEXT = 200_000  # characters: a report, not a document store
# The archive's own documents: not listed among the study's modalities on a report.
DOCUMENT_MODALITIES = frozenset({"DOC", "SR", "KO", "PR"})
PDF_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902


class ReportError(Exception):
    """A change the report does not allow now (the API answers 409)."""


class NotTheReader(ReportError):
    """The study is being read by another radiologist (the API answers 403)."""


@dataclass(frozen=True)
class SignedVersion:
    report_id: int
    version_id: int
    number: int
    state: str
    text_sha256: str
    signed_by: str
    signed_at: datetime
    pdf_sop_instance_uid: str
    sr_sop_instance_uid: str
    documents_stored: bool


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def report_of(session: Session, study: Study) -> Report | None:
    return session.scalar(select(Report).where(Report.study_pk == study.id))


def versions_of(session: Session, report: Report) -> list[ReportVersion]:
    return list(
        session.scalars(
            select(ReportVersion)
            .where(ReportVersion.report_id == report.id)
            .order_by(ReportVersion.number)
        )
    )


def save_draft(
    session: Session,
    study: Study,
    text: str,
    *,
    actor: Actor,
    template_id: int | None = None,
) -> Report:
    """Replace the study's draft with ``text`` (making the report, and claiming the study for
    ``actor`` if nobody reads it yet). ReportError if no draft may be written now (a final
    report: amend it first)."""
    if len(text) > MAX_TEXT:
        raise ReportError(f"the report is longer than {MAX_TEXT} characters")
    report = _report_for_update(session, study) or _new_report(session, study)
    if report.state in ("final", "amended") and report.draft_text is None:
        raise ReportError(f"the report is {report.state}: amend it to change it")
    _claim_for(session, study, actor)
    report.draft_text = text
    report.draft_author = actor.subject
    report.draft_updated_at = report.updated_at = utcnow()
    if template_id is not None:
        report.template_id = template_id
    return report


def amend(session: Session, study: Study, *, actor: Actor) -> Report:
    """Open an amendment of a final report: a new draft holding the latest signed text."""
    report = _report_for_update(session, study)
    if report is None or report.state not in ("final", "amended"):
        raise ReportError("only a final report can be amended")
    if report.draft_text is not None:
        return report  # an amendment is open already
    latest = versions_of(session, report)[-1]
    report.draft_text = latest.text
    report.draft_author = actor.subject
    report.draft_updated_at = report.updated_at = utcnow()
    _audit(session, study, actor, "amend-started", version=latest.number)
    return report


def sign(
    runtime: Runtime,
    study_pk: int,
    *,
    state: str,
    actor: Actor,
    expected_sha256: str | None = None,
) -> SignedVersion:
    """Sign the study's draft as ``state`` (preliminary or final; signing a final report's
    amendment makes an amended version, ``final`` or ``amended`` both ask for it).
    ``expected_sha256``: the SHA-256 of the text the signer read; ReportError if the draft has
    changed since. The caller has re-authenticated ``actor``."""
    if state not in ("preliminary", "final", "amended"):
        raise ReportError(f"a report is signed preliminary or final, not {state!r}")
    with runtime.sessions.begin() as session:
        study = session.get(Study, study_pk)
        if study is None:
            raise ReportError("the study is gone")
        report = _report_for_update(session, study)
        if report is None or report.draft_text is None:
            raise ReportError("there is no draft to sign")
        text = report.draft_text
        if not text.strip():
            raise ReportError("the draft is empty")
        digest = text_sha256(text)
        if expected_sha256 and expected_sha256 != digest:
            raise ReportError("the draft changed since you read it: read it again and sign")
        previous = versions_of(session, report)
        amending = report.state in ("final", "amended")
        if amending and state == "preliminary":
            raise ReportError("an amendment of a final report is signed final")
        version_state = "amended" if amending else state
        _claim_for(session, study, actor)
        target = {
            "preliminary": StudyState.PRELIMINARY,
            "final": StudyState.FINAL,
            "amended": StudyState.AMENDED,
        }[version_state]
        advance(session, study, target, actor=actor)
        version = ReportVersion(
            report_id=report.id,
            number=(previous[-1].number if previous else 0) + 1,
            state=version_state,
            text=text,
            text_sha256=digest,
            author=report.draft_author or actor.subject,
            signed_by=actor.subject,
            signed_at=utcnow(),
            pdf_sop_instance_uid=generate_uid(),
            sr_sop_instance_uid=generate_uid(),
            header=signing_header(session, study),
        )
        session.add(version)
        report.state = version_state
        report.updated_at = version.signed_at
        if version_state != "preliminary":
            report.draft_text = None
        session.flush()
        _audit(
            session,
            study,
            actor,
            "signed",
            version=version.number,
            state=version_state,
            text_sha256=digest,
            pdf=version.pdf_sop_instance_uid,
            sr=version.sr_sop_instance_uid,
        )
        if version_state != "preliminary":
            kind = NotificationKind.REPORT_AMENDED if amending else NotificationKind.REPORT_FINAL
            notify(
                session,
                kind,
                facility_id=study.facility_id,
                study_instance_uid=study.study_instance_uid,
                title=f"Report {version_state}: {describe_study(study)}",
                actor=actor.subject,
                version=version.number,
            )
        version_id = version.id
        signed = SignedVersion(
            report.id,
            version.id,
            version.number,
            version_state,
            digest,
            actor.subject,
            version.signed_at,
            version.pdf_sop_instance_uid,
            version.sr_sop_instance_uid,
            False,
        )
    stored = store_version_documents(runtime, version_id)
    return replace(signed, documents_stored=stored)


@dataclass(frozen=True)
class RenderedDocuments:
    pdf: bytes  # the PDF as rendered
    pdf_instance: bytes  # Part 10 Encapsulated PDF
    sr_instance: bytes  # Part 10 Basic Text SR
    facility: FacilityRef


def signing_header(session: Session, study: Study) -> dict[str, Any]:
    """What a version's documents show of the study and facility, taken at signing."""
    facility = session.get(Facility, study.facility_id)
    assert facility is not None
    modalities = [m for m in study.modalities_in_study.split("\\") if m not in DOCUMENT_MODALITIES]
    return {
        "facility": facility.display_name or facility.name,
        "modalities": "\\".join(modalities),
        "study": asdict(study_attributes(study)),
    }


def render_version(session: Session, version: ReportVersion) -> RenderedDocuments:
    """A version's PDF and its two DICOM instances (the same bytes whenever rendered)."""
    report = session.get(Report, version.report_id)
    assert report is not None
    facility = session.get(Facility, report.facility_id)
    assert facility is not None
    header = version.header
    attributes = StudyAttributes(**header["study"])
    organization = header["facility"]
    signed_at = _utc(version.signed_at)
    pdf = render_report_pdf(
        ReportContent(
            facility_name=organization,
            patient_name=attributes.patient_name,
            patient_id=attributes.patient_id,
            patient_birth_date=attributes.patient_birth_date,
            study_description=attributes.study_description,
            study_date=attributes.study_date,
            accession_number=attributes.accession_number,
            modalities=header["modalities"],
            study_instance_uid=attributes.study_instance_uid,
            text=version.text,
            state=version.state,
            version=version.number,
            author=version.author,
            signed_by=version.signed_by,
            signed_at=signed_at,
        )
    )
    title = f"{version.state.capitalize()} report, version {version.number}"
    pdf_instance = encapsulated_pdf(
        attributes,
        DocumentIdentity(
            version.pdf_sop_instance_uid,
            report.pdf_series_uid,
            PDF_SERIES_NUMBER,
            version.number,
            signed_at,
            "Report (PDF)",
        ),
        pdf,
        title=title,
    )
    predecessor = session.scalar(
        select(ReportVersion.sr_sop_instance_uid).where(
            ReportVersion.report_id == report.id, ReportVersion.number == version.number - 1
        )
    )
    sr_instance = basic_text_sr(
        attributes,
        DocumentIdentity(
            version.sr_sop_instance_uid,
            report.sr_series_uid,
            SR_SERIES_NUMBER,
            version.number,
            signed_at,
            "Report (SR)",
        ),
        sections(version.text),
        final=version.state != "preliminary",
        observer=Observer(version.signed_by, organization, signed_at),
        predecessor_sop_instance_uid=predecessor if version.state == "amended" else None,
    )
    return RenderedDocuments(
        pdf, pdf_instance, sr_instance, FacilityRef(facility.id, facility.name)
    )


def store_version_documents(runtime: Runtime, version_id: int) -> bool:
    """Store the version's PDF and SR in its study (ingest is idempotent: a retry of the
    same bytes is a duplicate). False if the archive could not store them now."""
    with runtime.reader() as session:
        version = session.get(ReportVersion, version_id)
        if version is None or version.documents_stored_at is not None:
            return version is not None
        rendered = render_version(session, version)
    try:
        store_document(runtime, rendered.facility, rendered.pdf_instance)
        store_document(runtime, rendered.facility, rendered.sr_instance)
    except IngestError as exc:
        log.warning("report version %s: documents not stored yet (%s)", version_id, exc.message)
        return False
    with runtime.sessions.begin() as session:
        version = session.get(ReportVersion, version_id)
        if version is not None:
            version.pdf_sha256 = hashlib.sha256(rendered.pdf).hexdigest()
            version.documents_stored_at = utcnow()
    return True


def store_pending_documents(runtime: Runtime, *, older_than: float = 0.0) -> int:
    """Store the documents of signed versions whose storing failed (signed at least
    ``older_than`` seconds ago: the signing request stores its own); how many were stored.
    Several workers may do it at once: ingest of the same bytes is idempotent."""
    signed_before = utcnow() - timedelta(seconds=older_than)
    with runtime.reader() as session:
        pending = list(
            session.scalars(
                select(ReportVersion.id)
                .where(
                    ReportVersion.documents_stored_at.is_(None),
                    ReportVersion.signed_at <= signed_before,
                )
                .order_by(ReportVersion.id)
                .limit(100)
            )
        )
    return sum(store_version_documents(runtime, version_id) for version_id in pending)


def stored_pdf(runtime: Runtime, facility_id: int, sop_instance_uid: str) -> bytes | None:
    """The PDF of an Encapsulated PDF instance stored in the facility, or None."""
    with runtime.reader() as session:
        key = session.scalar(
            select(Instance.object_key).where(
                Instance.facility_id == facility_id,
                Instance.sop_instance_uid == sop_instance_uid,
            )
        )
    if key is None:
        return None
    return encapsulated_document(dcmread(io.BytesIO(runtime.store.get(key))))


def _utc(moment: datetime) -> datetime:
    """A stored time in UTC (SQLite gives it back naive, PostgreSQL in the session's zone)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _new_report(session: Session, study: Study) -> Report:
    report = Report(
        study_pk=study.id,
        facility_id=study.facility_id,
        state="draft",
        pdf_series_uid=generate_uid(),
        sr_series_uid=generate_uid(),
    )
    session.add(report)
    session.flush()
    return report


def _report_for_update(session: Session, study: Study) -> Report | None:
    """The report row, locked until the transaction ends (PostgreSQL; SQLite has one writer)."""
    return session.scalar(
        select(Report).where(Report.study_pk == study.id).with_for_update(),
        execution_options={"populate_existing": True},
    )


def _claim_for(session: Session, study: Study, actor: Actor) -> None:
    """While the study is read, only its assignee writes: NotTheReader for anyone else; an
    unassigned study is claimed for ``actor``."""
    workflow = ensure_workflow(session, study)
    if workflow.state == StudyState.CANCELLED:
        raise ReportError("the study is cancelled: it is not to be reported")
    if workflow.state not in OPEN_STATES:
        return  # final or amended: any radiologist of the facility may amend
    if workflow.assignee == actor.subject:
        return
    if workflow.assignee is not None:
        raise NotTheReader(f"the study is being read by {workflow.assignee}")
    try:
        assign(session, study, actor.subject, actor=actor, only_if_free=True)
    except AlreadyAssigned as exc:
        raise NotTheReader(str(exc)) from exc


def _audit(session: Session, study: Study, actor: Actor, change: str, **detail: Any) -> None:
    record_change(
        session,
        actor,
        REPORT_AUDIT_ACTION,
        change,
        facility_id=study.facility_id,
        study_instance_uid=study.study_instance_uid,
        **detail,
    )
