"""The audit trail: who read or wrote which patient data, from where, with what outcome.

DICOMweb routers record through the API's audit sink, the SCP calls `record_audit` directly.
Recording is one insert in its own short transaction, and never fails the caller: if the
index refuses the row, the event goes to the log (logger ``noctis.core.audit``) instead.

SQLite admits one writer at a time: call `record_audit` outside any open index transaction
of the same thread, or add `audit_event(...)` to that transaction's session instead (then
the event commits, or not, with the change it describes).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from sqlalchemy import Connection, insert, select
from sqlalchemy.orm import Session, sessionmaker

from noctis.index.accounts import AuditEvent
from noctis.index.models import utcnow

log = logging.getLogger(__name__)

_INSERT_AUDIT = insert(AuditEvent.__table__)

ActorType = Literal["user", "token", "ae"]


class AuditAction(StrEnum):
    """The usual actions; callers may record others (keep them short, lower-case)."""

    QUERY = "query"  # QIDO-RS, C-FIND
    RETRIEVE = "retrieve"  # WADO-RS, rendered, thumbnails, C-GET
    MOVE = "move"  # C-MOVE (to another AE)
    STORE = "store"  # STOW-RS, C-STORE
    DELETE = "delete"
    LOGIN = "login"
    LOGOUT = "logout"
    ADMIN = "admin"  # users, tokens, settings changed


class AuditOutcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"  # the request was allowed but did not complete
    DENIED = "denied"  # not allowed (authentication, role or facility)


def _sessions(target: Any) -> sessionmaker[Session]:
    return getattr(target, "sessions", target)


def record_audit(
    runtime_or_sessions: Any,
    *,
    actor: str,
    actor_type: ActorType,
    client: str,
    action: str,
    outcome: str,
    study_instance_uid: str | None = None,
    facility_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> bool:
    """Write one audit event; False (and a log line) if it could not be written.

    `runtime_or_sessions` is a Runtime or a sessionmaker.
    """
    row = audit_row(
        actor=actor,
        actor_type=actor_type,
        client=client,
        action=action,
        outcome=outcome,
        study_instance_uid=study_instance_uid,
        facility_id=facility_id,
        detail=detail,
    )
    try:
        with _sessions(runtime_or_sessions).begin() as session:
            insert_audit_row(session.connection(), row)
    except Exception:
        log.exception(
            "audit event not recorded: actor=%s type=%s client=%s action=%s outcome=%s "
            "study=%s facility=%s detail=%s",
            actor,
            actor_type,
            client,
            action,
            outcome,
            study_instance_uid,
            facility_id,
            detail,
        )
        return False
    return True


def audit_event(**fields: Any) -> AuditEvent:
    """An audit row (not yet added to any session); the fields of `audit_row`."""
    return AuditEvent(**audit_row(**fields))


def audit_row(
    *,
    actor: str,
    actor_type: ActorType,
    client: str,
    action: str,
    outcome: str,
    study_instance_uid: str | None = None,
    facility_id: int | None = None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """The audit table's column values, cut to their sizes (for a Core insert)."""
    return {
        "at": at or utcnow(),
        "actor": actor[:255],
        "actor_type": actor_type,
        "client": client[:255],
        "action": str(action)[:64],
        "outcome": str(outcome)[:32],
        "study_instance_uid": study_instance_uid[:64] if study_instance_uid else None,
        "facility_id": facility_id,
        "detail": detail or None,
    }


def insert_audit_row(connection: Connection, row: dict[str, Any]) -> None:
    """One audit row through a prepared Core insert: a fraction of the ORM's cost, which
    matters because every DICOMweb read writes one."""
    connection.execute(_INSERT_AUDIT, row)


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    actor_type: str | None = None
    action: str | None = None
    outcome: str | None = None
    study_instance_uid: str | None = None
    facility_id: int | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


def query_audit(
    session: Session, where: AuditFilter, *, limit: int = 100, offset: int = 0
) -> Sequence[AuditEvent]:
    """Matching events, newest first."""
    query = select(AuditEvent)
    for column, value in (
        (AuditEvent.actor, where.actor),
        (AuditEvent.actor_type, where.actor_type),
        (AuditEvent.action, where.action),
        (AuditEvent.outcome, where.outcome),
        (AuditEvent.study_instance_uid, where.study_instance_uid),
        (AuditEvent.facility_id, where.facility_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.since is not None:
        query = query.where(AuditEvent.at >= where.since)
    if where.until is not None:
        query = query.where(AuditEvent.at < where.until)
    query = query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
    return session.scalars(query.limit(limit).offset(offset)).all()
