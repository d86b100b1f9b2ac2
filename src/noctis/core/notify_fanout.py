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
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from noctis.core.notifications import NotificationKind
from noctis.core.notify_settings import Receivers, facility_receivers, wanted_kinds
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
        audiences: dict[int, Audience | None] = {}  # read once per facility per batch
        inbox: list[dict[str, Any]] = []
        deliveries: list[dict[str, Any]] = []
        for event in session.scalars(
            select(NotificationEvent)
            .where(NotificationEvent.id.in_(taken))
            .order_by(NotificationEvent.id)
        ):
            if event.facility_id not in audiences:
                audiences[event.facility_id] = audience(session, event.facility_id, runtime)
            rows = recipients(event, audiences[event.facility_id])
            inbox += rows[0]
            deliveries += rows[1]
        _insert(session, UserNotification, inbox, ["user_id", "event_id"])
        _insert(session, NotificationDelivery, deliveries, ["event_id", "channel", "target"])
        log.debug(
            "notifications: %d events, %d in-app, %d deliveries",
            len(taken),
            len(inbox),
            len(deliveries),
        )
    return len(taken)


def _insert(session: Session, model: Any, rows: list[dict[str, Any]], key: list[str]) -> None:
    """Insert ``rows``, skipping those already there (a second fan-out: none). One statement
    executed with many parameter sets: compiled once, sent in batches by the driver."""
    if not rows:
        return
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(model.__table__).on_conflict_do_nothing(index_elements=key)
    session.connection().execute(statement, rows)


@dataclass(frozen=True)
class Audience:
    """Who may hear a facility's events: its users (with their preferences) and receivers."""

    facility: Facility
    users: list[tuple[User, NotificationPreference | None]]
    receivers: Receivers
    email_on: bool


def audience(session: Session, facility_id: int, runtime: Runtime) -> Audience | None:
    facility = session.get(Facility, facility_id)
    if facility is None:
        return None
    return Audience(
        facility,
        _users_of(session, facility.id),
        facility_receivers(session, facility, runtime.settings),
        bool(runtime.settings.smtp_host),
    )


def recipients(
    event: NotificationEvent, to: Audience | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The in-app notification rows and delivery rows one event makes."""
    inbox: list[dict[str, Any]] = []
    deliveries: list[dict[str, Any]] = []
    if to is None:
        return inbox, deliveries
    kind = NotificationKind(event.kind)
    for user, preference in to.users:
        if event.actor and user.username == event.actor:
            continue  # nobody is told of their own change (a report they signed)
        chosen = preference.kinds if preference is not None else None
        if kind.value not in wanted_kinds(Role(user.role), chosen):
            continue
        if preference is None or preference.in_app:
            inbox.append(
                {"user_id": user.id, "event_id": event.id, "facility_id": event.facility_id}
            )
        if to.email_on and preference is not None and preference.email and preference.email_address:
            deliveries.append(_delivery(event, Channel.EMAIL, preference.email_address, user.id))
    for webhook in to.receivers.spec.webhooks:
        if kind.value in webhook.kinds:
            deliveries.append(_delivery(event, Channel.WEBHOOK, webhook.name, None))
    if to.email_on:
        for recipient in to.receivers.spec.email_recipients:
            if kind.value in recipient.kinds:
                deliveries.append(_delivery(event, Channel.EMAIL, recipient.address, None))
    return inbox, deliveries


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
