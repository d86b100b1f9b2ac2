"""The report editor page, ``/ui/reports/{facility}/{study}``.

Radiologists (and administrators, read-only for signing) get the editor: a template picker
and snippets, a textarea autosaved while typing (``static/reports.js``: a debounced PUT of the
draft to the REST API), the sign form (state and password), the amend button, the version
history with PDF links, the attachments, and links to the viewer and back to the worklist.
Everything works as plain HTML forms too: the sign form carries the text, which is saved as
the draft before it is signed. Referring physicians get a read-only page of the final (and
amended) versions; a study they may not see, or without a final report, is 404. Technologists
get the study's attachments only (and may attach a PDF).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile, status
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import or_, select
from starlette.concurrency import run_in_threadpool

from noctis.api.audit import web_event
from noctis.api.auth.context import AuthContextDep
from noctis.api.auth.reauthenticate import confirm_password
from noctis.api.rest.reports import (
    ATTACH_ROLES,
    FULL_VIEW_ROLES,
    ReportOut,
    report_out,
)
from noctis.api.rest.visible import visible_study
from noctis.api.security import Principal, client_address
from noctis.api.web.render import PagePrincipalDep, render
from noctis.core import attachments, reports
from noctis.core.audit import AuditAction, AuditOutcome
from noctis.core.ingest import IngestError
from noctis.core.roles import READING_ROLES
from noctis.core.runtime import Runtime
from noctis.core.workflow import Actor, WorkflowError
from noctis.dicom.person_names import readable_person_name
from noctis.index.models import Study
from noctis.index.reports import ReportSnippet, ReportTemplate
from noctis.index.workflow import StudyWorkflow

router = APIRouter(include_in_schema=False)


def _page_url(facility: str, study_uid: str, message: str = "", error: str = "") -> str:
    url = f"/ui/reports/{quote(facility)}/{quote(study_uid)}"
    if message:
        return f"{url}?message={quote(message)}"
    if error:
        return f"{url}?error={quote(error)}"
    return url


def _editor_context(
    runtime: Runtime, principal: Principal, facility: str, study_uid: str
) -> dict[str, object]:
    with runtime.reader() as session:
        study = visible_study(session, principal, facility, study_uid)
        try:
            report: ReportOut | None = report_out(session, principal, facility, study)
        except HTTPException:
            report = None
        full = principal.role in FULL_VIEW_ROLES
        if not full and report is None and principal.role not in ATTACH_ROLES:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no final report of this study")
        templates, snippets = [], []
        if full:
            visible = or_(
                ReportTemplate.facility_id.is_(None),
                ReportTemplate.facility_id == study.facility_id,
            )
            modalities = [m for m in study.modalities_in_study.split("\\") if m] + [""]
            templates = list(
                session.scalars(
                    select(ReportTemplate)
                    .where(visible, ReportTemplate.modality.in_(modalities))
                    .order_by(ReportTemplate.name)
                )
            )
            snippets = list(
                session.scalars(
                    select(ReportSnippet)
                    .where(
                        or_(
                            ReportSnippet.facility_id.is_(None),
                            ReportSnippet.facility_id == study.facility_id,
                        )
                    )
                    .order_by(ReportSnippet.name)
                )
            )
        workflow = session.get(StudyWorkflow, study.id)
        facility_id = study.facility_id
        study_info = {
            "uid": study.study_instance_uid,
            "patient_name": readable_person_name(study.patient_name),
            "patient_id": study.patient_id,
            "description": study.study_description,
            "date": study.study_date,
            "accession": study.accession_number,
            "modalities": ", ".join(
                m
                for m in study.modalities_in_study.split("\\")
                if m and m not in reports.DOCUMENT_MODALITIES
            ),
            "state": workflow.state if workflow else "",
            "assignee": workflow.assignee if workflow else None,
        }
        session.expunge_all()
    files = attachments.attachments_of(runtime, _study_pk(runtime, principal, facility, study_uid))
    return {
        "facility": facility,
        "facility_id": facility_id,
        "study": study_info,
        "report": report,
        "editor": principal.role in READING_ROLES,
        "full": full,
        "templates": templates,
        "snippets": snippets,
        "attachments": files,
        "may_attach": principal.role in ATTACH_ROLES,
        "api": f"/api/studies/{quote(facility)}/{quote(study_uid)}",
        "page": _page_url(facility, study_uid),
        "viewer": f"/viewer?StudyInstanceUIDs={quote(study_uid)}",
    }


def _study_pk(runtime: Runtime, principal: Principal, facility: str, study_uid: str) -> int:
    with runtime.reader() as session:
        return visible_study(session, principal, facility, study_uid).id


@router.get("/ui/reports/{facility}/{study_uid}")
def report_page(
    facility: str,
    study_uid: str,
    request: Request,
    principal: PagePrincipalDep,
    context: AuthContextDep,
    message: str = "",
    error: str = "",
) -> Response:
    try:
        page = _editor_context(context.runtime, principal, facility, study_uid)
    except HTTPException as missing:
        return render(
            request,
            "reports_missing.html",
            principal,
            status_code=missing.status_code,
            detail=missing.detail,
        )
    context.runtime.audit.record(
        web_event(
            principal,
            client_address(request),
            AuditAction.RETRIEVE,
            AuditOutcome.SUCCESS,
            study_instance_uid=study_uid,
            facility_id=int(page["facility_id"]),  # type: ignore[call-overload]
            detail={"report": True, "page": True},
        )
    )
    template = "reports_editor.html" if page["full"] else "reports_read.html"
    return render(request, template, principal, message=message, error=error, **page)


@router.post("/ui/reports/{facility}/{study_uid}/sign")
async def sign_from_page(
    facility: str,
    study_uid: str,
    request: Request,
    principal: PagePrincipalDep,
    context: AuthContextDep,
    text: Annotated[str, Form(max_length=reports.MAX_TEXT)],
    password: Annotated[str, Form(max_length=1024)],
    state: Annotated[str, Form()] = "final",
) -> Response:
    """Save the text as the draft, check the password again, sign."""
    runtime = context.runtime
    if principal.role not in READING_ROLES:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="only radiologists sign")
    study_pk = await run_in_threadpool(_study_pk, runtime, principal, facility, study_uid)
    actor = Actor(principal.subject, "user", client_address(request))
    try:
        await run_in_threadpool(_save, runtime, study_pk, text, actor)
        await confirm_password(context, principal, password, actor.client)
        await run_in_threadpool(lambda: reports.sign(runtime, study_pk, state=state, actor=actor))
    except HTTPException as refused:
        if refused.status_code == status.HTTP_404_NOT_FOUND:
            raise
        return _back(facility, study_uid, error=str(refused.detail))
    except (reports.ReportError, WorkflowError) as refused:
        return _back(facility, study_uid, error=str(refused))
    return _back(facility, study_uid, message=f"Signed {state}.")


@router.post("/ui/reports/{facility}/{study_uid}/amend")
def amend_from_page(
    facility: str,
    study_uid: str,
    request: Request,
    principal: PagePrincipalDep,
    context: AuthContextDep,
) -> Response:
    runtime = context.runtime
    if principal.role not in READING_ROLES:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="only radiologists amend")
    actor = Actor(principal.subject, "user", client_address(request))
    try:
        with runtime.sessions.begin() as session:
            study = visible_study(session, principal, facility, study_uid)
            reports.amend(session, study, actor=actor)
    except (reports.ReportError, WorkflowError) as refused:
        return _back(facility, study_uid, error=str(refused))
    return _back(facility, study_uid, message="Amendment opened: edit and sign it.")


@router.post("/ui/reports/{facility}/{study_uid}/attachments")
async def attach_from_page(
    facility: str,
    study_uid: str,
    request: Request,
    principal: PagePrincipalDep,
    context: AuthContextDep,
    file: Annotated[UploadFile, File()],
    title: Annotated[str, Form(max_length=255)] = "",
) -> Response:
    runtime = context.runtime
    study_pk = await run_in_threadpool(_study_pk, runtime, principal, facility, study_uid)
    if principal.role not in ATTACH_ROLES:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="attaching: not your role")
    data = await file.read(attachments.MAX_ATTACHMENT_BYTES + 1)
    if len(data) > attachments.MAX_ATTACHMENT_BYTES:
        return _back(facility, study_uid, error="the file is too large")
    actor = Actor(principal.subject, "user", client_address(request))
    name = file.filename or ""
    try:
        await run_in_threadpool(
            lambda: attachments.attach_pdf(
                runtime,
                study_pk,
                data,
                title=title or name or "Attachment",
                filename=name,
                actor=actor,
            )
        )
    except (attachments.NotAPdf, IngestError) as refused:
        return _back(facility, study_uid, error=str(refused))
    return _back(facility, study_uid, message="Attached.")


def _save(runtime: Runtime, study_pk: int, text: str, actor: Actor) -> None:
    with runtime.sessions.begin() as session:
        study = session.get(Study, study_pk)
        assert study is not None
        report = reports.report_of(session, study)
        if report is not None and report.draft_text == text:
            return
        try:
            reports.save_draft(session, study, text, actor=actor)
        except reports.NotTheReader as exc:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=str(exc)) from exc


def _back(facility: str, study_uid: str, *, message: str = "", error: str = "") -> Response:
    return RedirectResponse(
        _page_url(facility, study_uid, message=message, error=error),
        status_code=status.HTTP_303_SEE_OTHER,
    )
