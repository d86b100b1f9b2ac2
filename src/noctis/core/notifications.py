"""Raising notifications: the one call every part of the reading workflow makes.

`notify` adds a `NotificationEvent` row to the caller's session, so the event commits with the
change that raised it, or not at all. Fanning events out (each user's in-app list, webhooks
signed with an HMAC, e-mail), retrying and recording deliveries is the notification worker's
job; producers never wait on a receiver.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from noctis.index.workflow import NotificationEvent


class NotificationKind(StrEnum):
    STAT_ARRIVED = "stat-arrived"  # a study of priority STAT arrived (or was raised to STAT)
    REPORT_FINAL = "report-final"  # a report was signed final
    REPORT_AMENDED = "report-amended"  # a final report was amended
    CRITICAL_RESULT = "critical-result"  # a critical finding was flagged on a study


def notify(
    session: Session,
    kind: NotificationKind,
    *,
    facility_id: int,
    title: str,
    study_instance_uid: str | None = None,
    actor: str = "",
    **detail: Any,
) -> NotificationEvent:
    """Raise one notification in ``session``'s transaction (flushed, so its id is known)."""
    event = NotificationEvent(
        facility_id=facility_id,
        kind=str(kind),
        study_instance_uid=study_instance_uid,
        title=title[:255],
        detail=detail,
        actor=actor,
    )
    session.add(event)
    session.flush()
    return event
