"""Deliveries (webhook calls, e-mails) through their states, as routing's transfers go:

- ``claim`` takes up to a batch of due deliveries (``pending``, or ``failed`` whose
  ``next_attempt_at`` has come) into ``sending`` under a claim token and a lease, counting
  the attempt (``SKIP LOCKED`` on PostgreSQL; SQLite's write transaction serializes);
- ``finish`` records an outcome only while the claim is still this worker's;
- ``take_back_stale`` makes due again what a dead worker held past its lease;
- a failure waits ``notify_backoff_seconds * 2**(attempts-1)`` (at most
  ``notify_backoff_max_seconds``) and after ``notify_attempts`` becomes ``dead`` until
  ``retry_dead``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from noctis.core.runtime import Runtime
from noctis.index import leases
from noctis.index.models import Facility, utcnow
from noctis.index.notify import DeliveryState, NotificationDelivery, UserNotification
from noctis.index.workflow import NotificationEvent
from noctis.settings import Settings

_DUE = (DeliveryState.PENDING.value, DeliveryState.FAILED.value)
ERROR_LENGTH = 2000
STATES = [s.value for s in DeliveryState]


@dataclass(frozen=True)
class ClaimedDelivery:
    id: int
    event_id: int
    facility_id: int
    channel: str
    target: str
    attempts: int  # including this one


@dataclass(frozen=True)
class Claim:
    token: str
    deliveries: list[ClaimedDelivery]


def backoff(settings: Settings, attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones."""
    delay = settings.notify_backoff_seconds * (2 ** min(max(0, attempts - 1), 32))
    return float(min(delay, settings.notify_backoff_max_seconds))


def claim(runtime: Runtime, batch: int) -> Claim:
    token = str(uuid.uuid4())
    now = utcnow()
    lease = timedelta(seconds=runtime.settings.notify_claim_seconds)
    with runtime.sessions.begin() as session:
        due = (
            select(NotificationDelivery.id)
            .where(
                NotificationDelivery.state.in_(_DUE), NotificationDelivery.next_attempt_at <= now
            )
            .order_by(NotificationDelivery.next_attempt_at, NotificationDelivery.id)
            .limit(batch)
        )
        if session.get_bind().dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        ids = list(session.scalars(due))
        if not ids:
            return Claim(token, [])
        session.execute(
            update(NotificationDelivery)
            .where(NotificationDelivery.id.in_(ids), NotificationDelivery.state.in_(_DUE))
            .values(
                state=DeliveryState.SENDING.value,
                claim=token,
                claimed_until=now + lease,
                attempts=NotificationDelivery.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        )
        rows = session.execute(
            select(
                NotificationDelivery.id,
                NotificationDelivery.event_id,
                NotificationDelivery.facility_id,
                NotificationDelivery.channel,
                NotificationDelivery.target,
                NotificationDelivery.attempts,
            )
            .where(NotificationDelivery.id.in_(ids), NotificationDelivery.claim == token)
            .order_by(NotificationDelivery.id)
        ).all()
    return Claim(token, [ClaimedDelivery(*row) for row in rows])


def finish(
    runtime: Runtime,
    claim_: Claim,
    delivery: ClaimedDelivery,
    *,
    error: str | None,
    permanent: bool = False,
) -> str | None:
    """Record one outcome (``error`` None: sent); the state it ends in, or None if the claim
    is no longer this worker's (taken back after its lease: the outcome is not recorded)."""
    settings = runtime.settings
    now = utcnow()
    values: dict[str, Any] = {"claimed_until": None}
    if error is None:
        values |= {"state": DeliveryState.SENT.value, "sent_at": now, "last_error": ""}
    else:
        dead = permanent or delivery.attempts >= settings.notify_attempts
        values |= {
            "state": (DeliveryState.DEAD if dead else DeliveryState.FAILED).value,
            "next_attempt_at": now + timedelta(seconds=backoff(settings, delivery.attempts)),
            "last_error": error[:ERROR_LENGTH],
        }
    with runtime.sessions.begin() as session:
        recorded = session.execute(
            update(NotificationDelivery)
            .where(
                NotificationDelivery.id == delivery.id,
                NotificationDelivery.claim == claim_.token,
                NotificationDelivery.state == DeliveryState.SENDING.value,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        ).rowcount
    return str(values["state"]) if recorded else None


def take_back_stale(runtime: Runtime) -> int:
    """Deliveries whose worker held them past the lease are due again (attempt counted)."""
    with runtime.sessions.begin() as session:
        return leases.take_back_stale(
            session,
            NotificationDelivery,
            sending=DeliveryState.SENDING.value,
            pending=DeliveryState.PENDING.value,
            now=utcnow(),
        )


def retry_dead(session: Session, facility_ids: frozenset[int] | None = None) -> int:
    """Dead deliveries (of these facilities) are pending again with a fresh count."""
    statement = update(NotificationDelivery).where(
        NotificationDelivery.state == DeliveryState.DEAD.value
    )
    if facility_ids is not None:
        statement = statement.where(NotificationDelivery.facility_id.in_(facility_ids))
    return int(
        session.execute(
            statement.values(
                state=DeliveryState.PENDING.value, attempts=0, next_attempt_at=utcnow()
            ).execution_options(synchronize_session=False)
        ).rowcount
    )


def list_deliveries(
    session: Session,
    *,
    state: str | None = None,
    facility_ids: frozenset[int] | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Deliveries, newest first, as the REST API shows them (no payload, no secret)."""
    query = (
        select(NotificationDelivery, NotificationEvent.kind, Facility.name)
        .join(NotificationEvent, NotificationEvent.id == NotificationDelivery.event_id)
        .join(Facility, Facility.id == NotificationDelivery.facility_id)
        .order_by(NotificationDelivery.id.desc())
        .limit(limit)
        .offset(offset)
    )
    if state is not None:
        query = query.where(NotificationDelivery.state == state)
    if facility_ids is not None:
        query = query.where(NotificationDelivery.facility_id.in_(facility_ids))
    return [
        {
            "id": d.id,
            "eventId": d.event_id,
            "kind": kind,
            "facility": facility,
            "channel": d.channel,
            "target": d.target,
            "state": d.state,
            "attempts": d.attempts,
            "nextAttemptAt": d.next_attempt_at.isoformat() if d.next_attempt_at else None,
            "lastError": d.last_error,
            "createdAt": d.created_at.isoformat() if d.created_at else None,
            "sentAt": d.sent_at.isoformat() if d.sent_at else None,
        }
        for d, kind, facility in session.execute(query)
    ]


def counts(session: Session) -> list[tuple[str, str, str, int]]:
    """(facility, channel, state, deliveries) for /metrics."""
    rows = session.execute(
        select(
            Facility.name,
            NotificationDelivery.channel,
            NotificationDelivery.state,
            func.count(),
        )
        .join(Facility, Facility.id == NotificationDelivery.facility_id)
        .group_by(Facility.name, NotificationDelivery.channel, NotificationDelivery.state)
    ).all()
    return [(f, c, s, int(n)) for f, c, s, n in rows]


def metrics_text(session: Session) -> bytes:
    """Deliveries per facility, channel and state, and events not fanned out yet, in
    Prometheus' text format, read from the index when /metrics is scraped."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    deliveries = GaugeMetricFamily(
        "noctis_notification_deliveries",
        "Notification deliveries (webhook calls, e-mails) by facility, channel and state",
        labels=("facility", "channel", "state"),
    )
    for facility, channel, state, count in counts(session):
        deliveries.add_metric((facility, channel, state), count)
    backlog = GaugeMetricFamily(
        "noctis_notification_events_pending", "Notification events not fanned out yet"
    )
    backlog.add_metric(
        (),
        int(
            session.scalar(
                select(func.count())
                .select_from(NotificationEvent)
                .where(NotificationEvent.fanned_out_at.is_(None))
            )
            or 0
        ),
    )

    class _Collector:
        def collect(self) -> Any:
            yield deliveries
            yield backlog

    registry = CollectorRegistry()
    registry.register(_Collector())  # type: ignore[arg-type]
    return generate_latest(registry)


def prune(session: Session, keep_days: float, batch: int = 5000) -> int:
    """Forget events older than ``keep_days`` (with their in-app notifications and
    deliveries, by cascade) once fanned out and with no delivery still to be tried; how many.
    Dead deliveries count as done: they stay visible until then."""
    cutoff = utcnow() - timedelta(days=keep_days)
    open_deliveries = select(NotificationDelivery.event_id).where(
        NotificationDelivery.state.in_(
            [DeliveryState.PENDING.value, DeliveryState.SENDING.value, DeliveryState.FAILED.value]
        )
    )
    ids = list(
        session.scalars(
            select(NotificationEvent.id)
            .where(
                NotificationEvent.created_at < cutoff,
                NotificationEvent.fanned_out_at.is_not(None),
                NotificationEvent.id.not_in(open_deliveries),
            )
            .order_by(NotificationEvent.id)
            .limit(batch)
        )
    )
    if not ids:
        return 0
    # Children first: SQLite enforces no foreign keys unless asked, so no cascade is relied on.
    session.execute(delete(UserNotification).where(UserNotification.event_id.in_(ids)))
    session.execute(delete(NotificationDelivery).where(NotificationDelivery.event_id.in_(ids)))
    session.execute(delete(NotificationEvent).where(NotificationEvent.id.in_(ids)))
    return len(ids)
