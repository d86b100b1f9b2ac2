"""The worklist's actions, shared by its REST API and its page: each checks the caller's
role (403), finds the study within the caller's facilities (404 otherwise, as for an unknown
study), makes the change through `noctis.core.workflow` (409 when the workflow refuses it)
and leaves committing to the caller's session."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy.orm import Session

from noctis.api.audit import actor_type, web_event
from noctis.api.rest.visible import visible_study
from noctis.api.rest.worklist_params import WorklistItem, WorklistParams, items
from noctis.api.security import Principal
from noctis.core.audit import AuditSink
from noctis.core.roles import ASSIGN_ROLES, READING_ROLES, WORKLIST_ROLES, Role
from noctis.core.workflow import (
    Actor,
    Priority,
    StudyState,
    WorkflowError,
    advance,
    assign,
    ensure_workflow,
    set_priority,
)
from noctis.core.worklist import WorklistRefused, add_note, check_assignee
from noctis.index.models import Study
from noctis.index.worklist import StudyNote, worklist_entry


def require_role(principal: Principal, roles: Collection[Role], what: str) -> None:
    if principal.role not in roles:
        allowed = ", ".join(sorted(r.value for r in roles))
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"{what}: only {allowed}")


def record_listing(
    audit: AuditSink, principal: Principal, client: str, params: WorklistParams, results: int
) -> None:
    """A page of the worklist was read (patients' names): the audit trail's ``worklist.list``."""
    detail = {"query": params.model_dump(exclude_defaults=True, mode="json"), "results": results}
    audit.record(web_event(principal, client, "worklist.list", "success", detail=detail))


def actor_of(principal: Principal, client: str) -> Actor:
    return Actor(principal.subject, actor_type(principal), client)


def refused(exc: WorklistRefused) -> HTTPException:
    text = str(exc)
    if text.startswith("no facility named"):
        return HTTPException(status.HTTP_404_NOT_FOUND, detail=text)
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=text)


def current_item(session: Session, study: Study) -> WorklistItem:
    """The study's worklist row as it stands in ``session`` (made if the arrival scan has
    not reached the study yet)."""
    ensure_workflow(session, study)
    session.flush()
    entry = worklist_entry(session, study.id)
    assert entry is not None
    return items(session, [entry])[0]


def _change(change: Callable[[], Any]) -> None:
    try:
        change()
    except WorkflowError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
    except WorklistRefused as exc:
        raise refused(exc) from exc


def claim_study(
    session: Session, principal: Principal, actor: Actor, facility: str, study: str
) -> Study:
    """Take the study to read it (409 naming who holds it, if someone else does)."""
    require_role(principal, READING_ROLES, "claiming a study")
    found = visible_study(session, principal, facility, study)
    _change(lambda: assign(session, found, principal.subject, actor=actor, only_if_free=True))
    return found


def release_study(
    session: Session, principal: Principal, actor: Actor, facility: str, study: str
) -> Study:
    """Give the study back (ready again): its reader, or who may assign."""
    require_role(principal, READING_ROLES | ASSIGN_ROLES, "releasing a study")
    found = visible_study(session, principal, facility, study)
    row = ensure_workflow(session, found)
    if row.assignee not in (None, principal.subject) and principal.role not in ASSIGN_ROLES:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"{row.assignee} reads it")
    _change(lambda: assign(session, found, None, actor=actor))
    return found


def assign_study(
    session: Session,
    principal: Principal,
    actor: Actor,
    facility: str,
    study: str,
    assignee: str | None,
) -> Study:
    """Give the study to a radiologist who may see its facility (None: nobody)."""
    require_role(principal, ASSIGN_ROLES, "assigning a study")
    found = visible_study(session, principal, facility, study)

    def change() -> None:
        if assignee is not None:
            check_assignee(session, assignee, found.facility_id)
        assign(session, found, assignee, actor=actor)

    _change(change)
    return found


def prioritise_study(
    session: Session,
    principal: Principal,
    actor: Actor,
    facility: str,
    study: str,
    priority: Priority,
    reason: str,
) -> Study:
    require_role(principal, ASSIGN_ROLES, "changing a study's priority")
    found = visible_study(session, principal, facility, study)
    _change(lambda: set_priority(session, found, priority, actor=actor, reason=reason))
    return found


def change_study_state(
    session: Session,
    principal: Principal,
    actor: Actor,
    facility: str,
    study: str,
    state: StudyState,
) -> Study:
    """Cancel the study (not to be read) or reinstate a cancelled one (ready again)."""
    require_role(principal, ASSIGN_ROLES, "cancelling or reinstating a study")
    if state not in (StudyState.CANCELLED, StudyState.READY):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail="a study is cancelled or reinstated"
        )
    found = visible_study(session, principal, facility, study)
    row = ensure_workflow(session, found)
    if state is StudyState.READY and row.state != StudyState.CANCELLED.value:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"only a cancelled study is reinstated ({row.state})"
        )
    _change(lambda: advance(session, found, state, actor=actor))
    return found


def note_study(
    session: Session, principal: Principal, actor: Actor, facility: str, study: str, text: str
) -> StudyNote:
    """A note on the study (every role that sees the worklist)."""
    require_role(principal, WORKLIST_ROLES, "the worklist")
    found = visible_study(session, principal, facility, study)
    try:
        return add_note(session, found, text, actor=actor)
    except WorklistRefused as exc:
        raise refused(exc) from exc
