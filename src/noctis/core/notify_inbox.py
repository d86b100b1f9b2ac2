"""A user's side of notifications: their in-app list (newest first, unread count, marked
read) and their preferences (kinds, channels, e-mail address).

Every read filters on the facilities the caller may see now: a notification of a facility
the user lost access to is no longer shown (nor counted), as its studies are not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from noctis.core.notify_settings import default_kinds, eligible_kinds, wanted_kinds
from noctis.core.roles import Role
from noctis.index.accounts import User
from noctis.index.models import Facility, utcnow
from noctis.index.notify import NotificationPreference, UserNotification
from noctis.index.workflow import NotificationEvent

IN_APP = "in-app"
EMAIL = "email"
CHANNELS = (IN_APP, EMAIL)


class PreferenceError(ValueError):
    """Preferences that cannot be kept as given (the API answers 422)."""


def user_id_of(session: Session, subject: str) -> int | None:
    return session.scalar(select(User.id).where(User.username == subject))


def _visible(query: Select[Any], facility_ids: frozenset[int] | None) -> Select[Any]:
    if facility_ids is None:
        return query
    return query.where(UserNotification.facility_id.in_(facility_ids))


def inbox(
    session: Session,
    user_id: int,
    facility_ids: frozenset[int] | None,
    *,
    unread_only: bool = False,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """The user's notifications, newest first, and how many are unread."""
    query = _visible(
        select(UserNotification, NotificationEvent, Facility.name)
        .join(NotificationEvent, NotificationEvent.id == UserNotification.event_id)
        .join(Facility, Facility.id == UserNotification.facility_id)
        .where(UserNotification.user_id == user_id),
        facility_ids,
    )
    if unread_only:
        query = query.where(UserNotification.read_at.is_(None))
    rows = session.execute(
        query.order_by(UserNotification.id.desc()).limit(limit).offset(offset)
    ).all()
    unread = session.scalar(
        _visible(
            select(func.count())
            .select_from(UserNotification)
            .where(UserNotification.user_id == user_id, UserNotification.read_at.is_(None)),
            facility_ids,
        )
    )
    return [_item(n, e, f) for n, e, f in rows], int(unread or 0)


def _item(note: UserNotification, event: NotificationEvent, facility: str) -> dict[str, Any]:
    return {
        "id": note.id,
        "eventId": event.id,
        "kind": event.kind,
        "title": event.title,
        "facility": facility,
        "studyInstanceUID": event.study_instance_uid,
        "reason": (event.detail or {}).get("reason", ""),
        "createdAt": note.created_at.isoformat() if note.created_at else None,
        "read": note.read_at is not None,
        "readAt": note.read_at.isoformat() if note.read_at else None,
    }


def mark_read(
    session: Session, user_id: int, facility_ids: frozenset[int] | None, notification_id: int
) -> bool:
    """Mark one of the user's notifications read; False if it is not theirs to see."""
    note = session.get(UserNotification, notification_id)
    if note is None or note.user_id != user_id:
        return False
    if facility_ids is not None and note.facility_id not in facility_ids:
        return False
    if note.read_at is None:
        note.read_at = utcnow()
    return True


def mark_all_read(session: Session, user_id: int, facility_ids: frozenset[int] | None) -> int:
    statement = update(UserNotification).where(
        UserNotification.user_id == user_id, UserNotification.read_at.is_(None)
    )
    if facility_ids is not None:
        statement = statement.where(UserNotification.facility_id.in_(facility_ids))
    return int(
        session.execute(
            statement.values(read_at=utcnow()).execution_options(synchronize_session=False)
        ).rowcount
    )


@dataclass(frozen=True)
class Preferences:
    kinds: list[str] | None  # None: the role's default
    channels: list[str]
    email_address: str


def preferences(session: Session, user_id: int) -> Preferences:
    row = session.get(NotificationPreference, user_id)
    if row is None:
        return Preferences(None, [IN_APP], "")
    channels = [c for c, on in ((IN_APP, row.in_app), (EMAIL, row.email)) if on]
    return Preferences(row.kinds, channels, row.email_address)


def describe(role: Role, prefs: Preferences) -> dict[str, Any]:
    return {
        "kinds": sorted(wanted_kinds(role, prefs.kinds)),
        "defaultKinds": default_kinds(role),
        "eligibleKinds": eligible_kinds(role),
        "usesDefault": prefs.kinds is None,
        "channels": prefs.channels,
        "emailAddress": prefs.email_address,
    }


def set_preferences(session: Session, user_id: int, role: Role, prefs: Preferences) -> None:
    """Keep the user's preferences, or PreferenceError saying what is wrong."""
    if prefs.kinds is not None:
        refused = sorted(set(prefs.kinds) - set(eligible_kinds(role)))
        if refused:
            raise PreferenceError(
                f"a {role.value} cannot receive {', '.join(refused)} "
                f"(may receive: {', '.join(eligible_kinds(role)) or 'nothing'})"
            )
    unknown = sorted(set(prefs.channels) - set(CHANNELS))
    if unknown:
        raise PreferenceError(f"unknown channels {unknown} (in-app, email)")
    if EMAIL in prefs.channels and "@" not in prefs.email_address:
        raise PreferenceError("the email channel needs an emailAddress")
    row = session.get(NotificationPreference, user_id)
    if row is None:
        row = NotificationPreference(user_id=user_id)
        session.add(row)
    row.kinds = None if prefs.kinds is None else sorted(set(prefs.kinds))
    row.in_app = IN_APP in prefs.channels
    row.email = EMAIL in prefs.channels
    row.email_address = prefs.email_address.strip()
    row.updated_at = utcnow()
    session.flush()
