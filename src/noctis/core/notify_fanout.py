"""Fanning notification events out: each new event of the outbox becomes the in-app
notification of every user who should hear it, and a delivery per webhook and e-mail
recipient that subscribes to its kind.

Of several workers fanning out at once, each event is taken by one: the batch is locked
``FOR UPDATE SKIP LOCKED`` on PostgreSQL (SQLite's write transaction serializes them), and
``fanned_out_at`` moves only from NULL, by a conditional UPDATE, in the same transaction as
the rows it creates, so a worker killed mid-way leaves the event to the next one, whole.
The unique keys (user x event, event x channel x target) make a second fan-out a no-op.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import exists, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from noctis.core.notifications import NotificationKind
from noctis.core.notify_settings import facility_receivers, wanted_kinds
from noctis.core.roles import Role
from noctis.core.runtime import Runtime
from noctis.index.accounts import User, UserFacility
from noctis.index.models import Facility, utcnow
from noctis.index.notify import (
    Channel,
    DeliveryState,
    NotificationDelivery,
    NotificationPreference,
    UserNotification,
)
from noctis.index.workflow import NotificationEvent

log = logging.getLogger(__name__)

BATCH = 100


def fan_out(runtime: Runtime, batch: int = BATCH) -> int:
    """Fan out up to ``batch`` new events (oldest first); how many this worker took."""
    with runtime.sessions.begin() as session:
        pending = (
            select(NotificationEvent.id)
            .where(NotificationEvent.fanned_out_at.is_(None))
            .order_by(NotificationEvent.id)
            .limit(batch)
        )
        if session.get_bind().dialect.name == "postgresql":
            pending = pending.with_for_update(skip_locked=True)
        ids = list(session.scalars(pending))
        if not ids:
            return 0
        taken = list(
            session.scalars(
                update(NotificationEvent)
                .where(NotificationEvent.id.in_(ids), NotificationEvent.fanned_out_at.is_(None))
                .values(fanned_out_at=utcnow(), attempts=NotificationEvent.attempts + 1)
                .returning(NotificationEvent.id)
                .execution_options(synchronize_session=False)
            )
        )
        for event in session.scalars(
            select(NotificationEvent).where(NotificationEvent.id.in_(taken))
        ):
            fan_out_event(session, event, runtime)
    return len(taken)


def fan_out_event(session: Session, event: NotificationEvent, runtime: Runtime) -> None:
    facility = session.get(Facility, event.facility_id)
    if facility is None:
        return
    kind = NotificationKind(event.kind)
    inbox: list[dict[str, Any]] = []
    deliveries: list[dict[str, Any]] = []
    email_on = bool(runtime.settings.smtp_host)
    for user, preference in _users_of(session, facility.id):
        chosen = preference.kinds if preference is not None else None
        if kind.value not in wanted_kinds(Role(user.role), chosen):
            continue
        if preference is None or preference.in_app:
            inbox.append({"user_id": user.id, "event_id": event.id, "facility_id": facility.id})
        if email_on and preference is not None and preference.email and preference.email_address:
            deliveries.append(_delivery(event, Channel.EMAIL, preference.email_address, user.id))
    receivers = facility_receivers(session, facility, runtime.settings)
    for webhook in receivers.spec.webhooks:
        if kind.value in webhook.kinds:
            deliveries.append(_delivery(event, Channel.WEBHOOK, webhook.name, None))
    if email_on:
        for recipient in receivers.spec.email_recipients:
            if kind.value in recipient.kinds:
                deliveries.append(_delivery(event, Channel.EMAIL, recipient.address, None))
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    if inbox:
        session.execute(
            dialect.insert(UserNotification)
            .values(inbox)
            .on_conflict_do_nothing(index_elements=["user_id", "event_id"])
        )
    if deliveries:
        session.execute(
            dialect.insert(NotificationDelivery)
            .values(deliveries)
            .on_conflict_do_nothing(index_elements=["event_id", "channel", "target"])
        )
    log.info(
        "notification %s (%s, facility %s): %d users, %d deliveries",
        event.id,
        kind.value,
        facility.name,
        len(inbox),
        len(deliveries),
    )


def _users_of(
    session: Session, facility_id: int
) -> list[tuple[User, NotificationPreference | None]]:
    """Enabled users who may see the facility's studies (administrators see every one)."""
    granted = exists().where(
        UserFacility.user_id == User.id, UserFacility.facility_id == facility_id
    )
    rows = session.execute(
        select(User, NotificationPreference)
        .outerjoin(NotificationPreference, NotificationPreference.user_id == User.id)
        .where(User.enabled.is_(True), or_(User.role == Role.ADMIN.value, granted))
        .order_by(User.id)
    ).all()
    return [(user, preference) for user, preference in rows]


def _delivery(
    event: NotificationEvent, channel: Channel, target: str, user_id: int | None
) -> dict[str, Any]:
    now = utcnow()
    return {
        "event_id": event.id,
        "facility_id": event.facility_id,
        "channel": channel.value,
        "target": target,
        "user_id": user_id,
        "state": DeliveryState.PENDING.value,
        "attempts": 0,
        "next_attempt_at": now,
        "last_error": "",
        "created_at": now,
    }
