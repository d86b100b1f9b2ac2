"""A study's report and attachments (``/api/studies/{facility}/{study}/...``).

Who sees what: radiologists, administrators and facility administrators see the report in
every state, with its draft; referring physicians see only its final and amended versions, and
a study without one answers 404 as an unknown study does; technologists see no reports (403),
only the attachments they manage. A study of a facility the caller may not read is 404 too.
Radiologists (READING_ROLES) write and sign; signing asks for the password again
(`noctis.api.auth.reauthenticate`). Attachments: ORDER_ROLES and radiologists upload PDFs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile, status
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from noctis.api.audit import web_event
from noctis.api.auth.context import AuthContextDep
from noctis.api.auth.reauthenticate import confirm_password
from noctis.api.rest.deps import SessionDep
from noctis.api.rest.visible import visible_study
from noctis.api.security import Principal, PrincipalDep, client_address
from noctis.core import attachments, reports
from noctis.core.audit import AuditAction, AuditEvent, AuditOutcome, add_to_session
from noctis.core.ingest import IngestError
from noctis.core.roles import ORDER_ROLES, READING_ROLES, Role
from noctis.core.runtime import Runtime
from noctis.core.workflow import Actor, WorkflowError
from noctis.index.models import Study
from noctis.index.reports import Report, ReportVersion, StudyAttachment

router = APIRouter(tags=["reports"])

FULL_VIEW_ROLES = READING_ROLES | {Role.ADMIN, Role.FACILITY_ADMIN}
SIGNED_STATES = ("final", "amended")
READ_ROLES = FULL_VIEW_ROLES | {Role.REFERRING_PHYSICIAN}  # technologists: attachments only
ATTACH_ROLES = ORDER_ROLES | READING_ROLES


class VersionOut(BaseModel):
    number: int
    state: str = Field(description="preliminary, final or amended")
    text: str
    text_sha256: str = Field(description="SHA-256 of the signed text (UTF-8)")
    author: str
    signed_by: str
    signed_at: datetime
    pdf_sop_instance_uid: str
    sr_sop_instance_uid: str
    documents_stored: bool = Field(description="its PDF and SR are stored in the study")
    pdf_url: str


class ReportOut(BaseModel):
    facility: str
    study_instance_uid: str
    state: str = Field(description="draft (never signed), preliminary, final or amended")
    draft: str | None = Field(description="the draft being written (radiologists only)")
    draft_sha256: str | None
    draft_author: str | None
    draft_updated_at: datetime | None
    versions: list[VersionOut]


class DraftIn(BaseModel):
    text: str = Field(max_length=reports.MAX_TEXT)
    template_id: int | None = None


class SignIn(BaseModel):
    state: Literal["preliminary", "final", "amended"] = Field(
        description="preliminary or final (an amendment is signed final; amended also asks for it)"
    )
    password: str = Field(max_length=1024, description="the signer's password, again")
    text_sha256: str | None = Field(
        None, description="SHA-256 of the draft the signer read: refused (409) if it changed"
    )


class AttachmentOut(BaseModel):
    id: int
    title: str
    filename: str
    sop_instance_uid: str
    series_instance_uid: str
    size_bytes: int
    sha256: str
    uploaded_by: str
    uploaded_at: datetime


def _base(facility: str, study_uid: str) -> str:
    return f"/api/studies/{facility}/{study_uid}"


def _version_out(base: str, version: ReportVersion) -> VersionOut:
    return VersionOut(
        number=version.number,
        state=version.state,
        text=version.text,
        text_sha256=version.text_sha256,
        author=version.author,
        signed_by=version.signed_by,
        signed_at=version.signed_at,
        pdf_sop_instance_uid=version.pdf_sop_instance_uid,
        sr_sop_instance_uid=version.sr_sop_instance_uid,
        documents_stored=version.documents_stored_at is not None,
        pdf_url=f"{base}/report/versions/{version.number}/pdf",
    )


def _visible_versions(
    session: Session, principal: Principal, report: Report | None
) -> list[ReportVersion]:
    if principal.role not in READ_ROLES:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="reports: not for your role")
    if report is None:
        return []
    versions = reports.versions_of(session, report)
    if principal.role in FULL_VIEW_ROLES:
        return versions
    return [v for v in versions if v.state in SIGNED_STATES]


def _not_found(study_uid: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no report of study {study_uid}")


def report_out(session: Session, principal: Principal, facility: str, study: Study) -> ReportOut:
    report = reports.report_of(session, study)
    versions = _visible_versions(session, principal, report)
    full = principal.role in FULL_VIEW_ROLES
    if not full and not versions:
        raise _not_found(study.study_instance_uid)
    draft = report.draft_text if full and report is not None else None
    base = _base(facility, study.study_instance_uid)
    return ReportOut(
        facility=facility,
        study_instance_uid=study.study_instance_uid,
        state=(report.state if report else "draft") if full else versions[-1].state,
        draft=draft,
        draft_sha256=reports.text_sha256(draft) if draft is not None else None,
        draft_author=report.draft_author if full and report else None,
        draft_updated_at=report.draft_updated_at if full and report else None,
        versions=[_version_out(base, v) for v in versions],
    )


def audit_read(session: Session, principal: Principal, request: Request, study: Study) -> None:
    """A report read, in the audit trail (committed with the request's session)."""
    add_to_session(
        session,
        web_event(
            principal,
            client_address(request),
            AuditAction.RETRIEVE,
            AuditOutcome.SUCCESS,
            study_instance_uid=study.study_instance_uid,
            facility_id=study.facility_id,
            detail={"report": True},
        ),
    )


def _actor(principal: Principal, request: Request) -> Actor:
    kind = "token" if principal.method == "token" else "user"
    return Actor(principal.subject, kind, client_address(request))


def _require(principal: Principal, roles: frozenset[Role], what: str) -> None:
    if principal.role not in roles:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"{what}: not allowed for your role")


@router.get("/studies/{facility}/{study_uid}/report")
def get_report(
    facility: str, study_uid: str, request: Request, principal: PrincipalDep, session: SessionDep
) -> ReportOut:
    study = visible_study(session, principal, facility, study_uid)
    found = report_out(session, principal, facility, study)
    audit_read(session, principal, request, study)
    return found


@router.put("/studies/{facility}/{study_uid}/report/draft")
def put_draft(
    facility: str,
    study_uid: str,
    body: DraftIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
) -> ReportOut:
    """Replace the draft (autosaved while typing); signed versions never change."""
    study = visible_study(session, principal, facility, study_uid)
    _require(principal, READING_ROLES, "writing reports")
    with _refusals():
        reports.save_draft(
            session,
            study,
            body.text,
            actor=_actor(principal, request),
            template_id=body.template_id,
        )
    return report_out(session, principal, facility, study)


@router.post("/studies/{facility}/{study_uid}/report/amend")
def post_amend(
    facility: str, study_uid: str, request: Request, principal: PrincipalDep, session: SessionDep
) -> ReportOut:
    """Open an amendment of the final report: a draft holding its latest text."""
    study = visible_study(session, principal, facility, study_uid)
    _require(principal, READING_ROLES, "amending reports")
    with _refusals():
        reports.amend(session, study, actor=_actor(principal, request))
    return report_out(session, principal, facility, study)


@router.post("/studies/{facility}/{study_uid}/report/sign")
async def post_sign(
    facility: str,
    study_uid: str,
    body: SignIn,
    request: Request,
    principal: PrincipalDep,
    context: AuthContextDep,
) -> ReportOut:
    """Sign the draft: the password is checked as at login (same lockout), then the version
    is signed, the workflow moved and its PDF and SR stored in the study."""
    runtime = context.runtime
    study_pk = await run_in_threadpool(_study_pk, runtime, principal, facility, study_uid)
    _require(principal, READING_ROLES, "signing reports")
    actor = _actor(principal, request)
    try:
        await confirm_password(context, principal, body.password, actor.client)
    except HTTPException as refused:
        await run_in_threadpool(_audit_refused, runtime, principal, actor, study_pk, refused)
        raise
    with _refusals():
        await run_in_threadpool(
            lambda: reports.sign(
                runtime,
                study_pk,
                state=body.state,
                actor=actor,
                expected_sha256=body.text_sha256,
            )
        )
    return await run_in_threadpool(_report_now, runtime, principal, facility, study_uid)


@router.get("/studies/{facility}/{study_uid}/report/versions")
def get_versions(
    facility: str, study_uid: str, request: Request, principal: PrincipalDep, session: SessionDep
) -> list[VersionOut]:
    study = visible_study(session, principal, facility, study_uid)
    found = report_out(session, principal, facility, study).versions
    audit_read(session, principal, request, study)
    return found


@router.get(
    "/studies/{facility}/{study_uid}/report/versions/{number}/pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
)
def get_version_pdf(
    facility: str,
    study_uid: str,
    number: int,
    request: Request,
    principal: PrincipalDep,
    context: AuthContextDep,
) -> Response:
    """The version's PDF as stored in the study (rendered again, identically, if its
    storing is still pending)."""
    runtime = context.runtime
    with runtime.reader() as session:
        study = visible_study(session, principal, facility, study_uid)
        report = reports.report_of(session, study)
        found = [v for v in _visible_versions(session, principal, report) if v.number == number]
        if not found:
            raise _not_found(study_uid)
        version = found[0]
        facility_id = study.facility_id
        pdf_uid = version.pdf_sop_instance_uid
        pending = version.documents_stored_at is None
        rendered = reports.render_version(session, version).pdf if pending else None
    pdf = rendered if rendered is not None else reports.stored_pdf(runtime, facility_id, pdf_uid)
    if pdf is None:
        raise _not_found(study_uid)
    runtime.audit.record(
        _event(principal, client_address(request), study_uid, facility_id, report_version=number)
    )
    name = f"report-{study_uid}-v{number}.pdf"
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{name}"'},
    )


@router.post("/studies/{facility}/{study_uid}/attachments", status_code=201)
async def post_attachment(
    facility: str,
    study_uid: str,
    request: Request,
    principal: PrincipalDep,
    context: AuthContextDep,
    file: Annotated[UploadFile, File(description="a PDF document")],
    title: Annotated[str, Form(max_length=255)] = "",
) -> AttachmentOut:
    """Attach a PDF (e.g. a scanned requisition): stored in the study as Encapsulated PDF."""
    runtime = context.runtime
    study_pk = await run_in_threadpool(_study_pk, runtime, principal, facility, study_uid)
    _require(principal, ATTACH_ROLES, "attaching documents")
    data = await file.read(attachments.MAX_ATTACHMENT_BYTES + 1)
    if len(data) > attachments.MAX_ATTACHMENT_BYTES:
        raise HTTPException(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            detail=f"an attachment may be at most {attachments.MAX_ATTACHMENT_BYTES >> 20} MiB",
        )
    filename = file.filename or ""
    try:
        row = await run_in_threadpool(
            lambda: attachments.attach_pdf(
                runtime,
                study_pk,
                data,
                title=title or filename or "Attachment",
                filename=filename,
                actor=_actor(principal, request),
            )
        )
    except attachments.NotAPdf as exc:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail=str(exc)) from exc
    except IngestError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=exc.message) from exc
    return AttachmentOut.model_validate(row, from_attributes=True)


@router.get("/studies/{facility}/{study_uid}/attachments")
def get_attachments(
    facility: str, study_uid: str, principal: PrincipalDep, context: AuthContextDep
) -> list[AttachmentOut]:
    with context.runtime.reader() as session:
        study_pk = visible_study(session, principal, facility, study_uid).id
    return [
        AttachmentOut.model_validate(row, from_attributes=True)
        for row in attachments.attachments_of(context.runtime, study_pk)
    ]


@router.get(
    "/studies/{facility}/{study_uid}/attachments/{attachment_id}/pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
)
def get_attachment_pdf(
    facility: str,
    study_uid: str,
    attachment_id: int,
    request: Request,
    principal: PrincipalDep,
    context: AuthContextDep,
) -> Response:
    """The attached PDF as uploaded (DICOM's padding byte cut off)."""
    runtime = context.runtime
    with runtime.reader() as session:
        study = visible_study(session, principal, facility, study_uid)
        row = session.get(StudyAttachment, attachment_id)
        if row is None or row.study_pk != study.id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such attachment")
        facility_id, sop_uid, name = study.facility_id, row.sop_instance_uid, row.filename
    pdf = reports.stored_pdf(runtime, facility_id, sop_uid)
    if pdf is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="the attachment is gone")
    runtime.audit.record(
        _event(principal, client_address(request), study_uid, facility_id, attachment=sop_uid)
    )
    safe = "".join(c for c in name if c.isalnum() or c in "._-") or "attachment.pdf"
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{safe}"'},
    )


class _refusals:
    """Domain refusals as HTTP answers: another radiologist's study 403, the rest 409."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> bool:
        if isinstance(error, reports.NotTheReader):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=str(error)) from error
        if isinstance(error, reports.ReportError | WorkflowError):
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from error
        return False


def _study_pk(runtime: Runtime, principal: Principal, facility: str, study_uid: str) -> int:
    with runtime.reader() as session:
        return visible_study(session, principal, facility, study_uid).id


def _report_now(runtime: Runtime, principal: Principal, facility: str, study_uid: str) -> ReportOut:
    with runtime.reader() as session:
        study = visible_study(session, principal, facility, study_uid)
        return report_out(session, principal, facility, study)


def _event(
    principal: Principal, client: str, study_uid: str, facility_id: int, **detail: object
) -> AuditEvent:
    return web_event(
        principal,
        client,
        AuditAction.RETRIEVE,
        AuditOutcome.SUCCESS,
        study_instance_uid=study_uid,
        facility_id=facility_id,
        detail=dict(detail),
    )


def _audit_refused(
    runtime: Runtime, principal: Principal, actor: Actor, study_pk: int, refused: HTTPException
) -> None:
    with runtime.reader() as session:
        study = session.get(Study, study_pk)
        uid, facility_id = study.study_instance_uid, study.facility_id
    runtime.audit.record(
        web_event(
            principal,
            actor.client,
            reports.REPORT_AUDIT_ACTION,
            AuditOutcome.DENIED,
            study_instance_uid=uid,
            facility_id=facility_id,
            detail={"change": "sign", "reason": str(refused.detail)},
        )
    )
