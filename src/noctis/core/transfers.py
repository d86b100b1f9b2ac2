"""Transfers through their states: claimed, sent, failed (backing off), dead, retried.

Every state change is a conditional UPDATE in the index, so workers on several machines
share one destination's transfers without sending any twice uncounted:

- ``claim`` takes up to a batch of due transfers of one destination (``pending``, or
  ``failed`` whose ``next_attempt_at`` has come) into ``sending`` under a claim token and a
  lease, counting the attempt (on PostgreSQL the candidates are locked ``SKIP LOCKED``, so two
  workers take different rows; on SQLite the write transaction serializes them);
- ``finish`` records each outcome, only while the claim is still this worker's;
- ``take_back_stale`` returns to ``pending`` what a dead worker held past its lease (a
  worker killed mid-forward): it is sent again and that attempt is counted;
- a failure waits ``initialDelaySeconds * 2**(attempts-1)`` (at most ``maxDelaySeconds``)
  and after the route's last attempt becomes ``dead`` until ``retry_dead``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from noctis.core.runtime import Runtime
from noctis.index import leases
from noctis.index.models import Facility, Instance, utcnow
from noctis.index.routing import RouteRow, RouteSent, Transfer, TransferState

_DUE_STATES = (TransferState.PENDING.value, TransferState.FAILED.value)
ERROR_LENGTH = 1024


@dataclass(frozen=True)
class Claimed:
    """A transfer this worker holds, with what it needs to send it."""

    id: int
    route_id: int
    sop_instance_uid: str
    attempts: int
    retry_attempts: int
    retry_initial_seconds: float
    retry_max_seconds: float
    # The stored instance (None: no longer stored, e.g. deleted since it was routed).
    object_key: str | None
    sop_class_uid: str | None
    transfer_syntax_uid: str | None


@dataclass(frozen=True)
class Outcome:
    transfer: Claimed
    sent: bool
    error: str = ""
    permanent: bool = False  # no later attempt can succeed: dead at once


@dataclass
class Claim:
    token: str
    transfers: list[Claimed]
    destination: str = ""


def backoff(claimed: Claimed) -> float:
    """Seconds before the next attempt after ``claimed.attempts`` failed ones."""
    exponent = max(0, claimed.attempts - 1)
    delay = claimed.retry_initial_seconds * (2 ** min(exponent, 32))
    return min(delay, claimed.retry_max_seconds)


def claim(runtime: Runtime, destination: str, batch: int, lease: float) -> Claim:
    """Take up to ``batch`` due transfers to ``destination`` (oldest first)."""
    token = str(uuid.uuid4())
    now = utcnow()
    with runtime.sessions.begin() as session:
        due = (
            select(Transfer.id)
            .where(
                Transfer.destination == destination,
                Transfer.state.in_(_DUE_STATES),
                Transfer.next_attempt_at <= now,
            )
            .order_by(Transfer.id)
            .limit(batch)
        )
        if session.get_bind().dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        ids = list(session.scalars(due))
        if not ids:
            return Claim(token, [], destination)
        session.execute(
            update(Transfer)
            .where(Transfer.id.in_(ids), Transfer.state.in_(_DUE_STATES))
            .values(
                state=TransferState.SENDING.value,
                claim=token,
                claimed_until=now + timedelta(seconds=lease),
                attempts=Transfer.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        )
        rows = session.execute(
            select(
                Transfer.id,
                Transfer.route_id,
                Transfer.sop_instance_uid,
                Transfer.attempts,
                RouteRow.retry_attempts,
                RouteRow.retry_initial_seconds,
                RouteRow.retry_max_seconds,
                Instance.object_key,
                Instance.sop_class_uid,
                Instance.transfer_syntax_uid,
            )
            .join(RouteRow, RouteRow.id == Transfer.route_id)
            .outerjoin(
                Instance,
                and_(
                    Instance.facility_id == Transfer.facility_id,
                    Instance.sop_instance_uid == Transfer.sop_instance_uid,
                ),
            )
            .where(Transfer.id.in_(ids), Transfer.claim == token)  # by key: no scan
            .order_by(Transfer.id)
        ).all()
    return Claim(token, [Claimed(*row) for row in rows], destination)


def extend(runtime: Runtime, claim_: Claim, lease: float) -> None:
    """Keep holding what is still unsent of a claim for ``lease`` more seconds."""
    with runtime.sessions.begin() as session:
        session.execute(
            update(Transfer)
            .where(
                Transfer.id.in_([t.id for t in claim_.transfers]),
                Transfer.claim == claim_.token,
                Transfer.state == TransferState.SENDING.value,
            )
            .values(claimed_until=utcnow() + timedelta(seconds=lease))
            .execution_options(synchronize_session=False)
        )


def finish(runtime: Runtime, claim_: Claim, outcomes: Iterable[Outcome]) -> None:
    """Record outcomes of a claim (ignored for transfers the claim no longer holds)."""
    now = utcnow()
    sent: list[Claimed] = []
    failures: list[tuple[Outcome, str, datetime]] = []
    for outcome in outcomes:
        if outcome.sent:
            sent.append(outcome.transfer)
            continue
        transfer = outcome.transfer
        dead = outcome.permanent or transfer.attempts >= transfer.retry_attempts
        state = TransferState.DEAD if dead else TransferState.FAILED
        failures.append((outcome, state.value, now + timedelta(seconds=backoff(transfer))))
    held = and_(Transfer.claim == claim_.token, Transfer.state == TransferState.SENDING.value)
    with runtime.sessions.begin() as session:
        for route_id in sorted({t.route_id for t in sent}):
            ids = [t.id for t in sent if t.route_id == route_id]
            recorded = session.execute(
                update(Transfer)
                .where(Transfer.id.in_(ids), held)
                .values(
                    state=TransferState.SENT.value,
                    sent_at=now,
                    claimed_until=None,
                    last_error="",
                )
                .execution_options(synchronize_session=False)
            ).rowcount
            if recorded:
                _count_sent(session, route_id, claim_.destination, int(recorded))
        for outcome, state, next_attempt in failures:
            session.execute(
                update(Transfer)
                .where(Transfer.id == outcome.transfer.id, held)
                .values(
                    state=state,
                    next_attempt_at=next_attempt,
                    claimed_until=None,
                    last_error=outcome.error[:ERROR_LENGTH],
                )
                .execution_options(synchronize_session=False)
            )


def _count_sent(session: Session, route_id: int, destination: str, count: int) -> None:
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(RouteSent).values(
        route_id=route_id, destination=destination, sent=count
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["route_id", "destination"],
            set_={"sent": RouteSent.sent + statement.excluded.sent},
        )
    )


def postpone(runtime: Runtime, destination: str, seconds: float, reason: str) -> int:
    """The destination cannot be reached: move its other due transfers to ``seconds`` from
    now (their attempts are not counted: one batch probes the destination per delay)."""
    now = utcnow()
    with runtime.sessions.begin() as session:
        return int(
            session.execute(
                update(Transfer)
                .where(
                    Transfer.destination == destination,
                    Transfer.state.in_(_DUE_STATES),
                    Transfer.next_attempt_at <= now + timedelta(seconds=seconds),
                )
                .values(
                    next_attempt_at=now + timedelta(seconds=seconds),
                    last_error=reason[:ERROR_LENGTH],
                )
                .execution_options(synchronize_session=False)
            ).rowcount
        )


def take_back_stale(runtime: Runtime) -> int:
    """Transfers whose worker held them past the lease are due again (the attempt it made
    stays counted)."""
    with runtime.sessions.begin() as session:
        return leases.take_back_stale(
            session,
            Transfer,
            sending=TransferState.SENDING.value,
            pending=TransferState.PENDING.value,
            now=utcnow(),
        )


def due_destinations(runtime: Runtime) -> list[str]:
    """Destinations with due transfers and no worker holding any of theirs."""
    now = utcnow()
    with runtime.sessions() as session:
        busy = select(Transfer.destination).where(
            Transfer.state == TransferState.SENDING.value, Transfer.claimed_until >= now
        )
        return list(
            session.scalars(
                select(Transfer.destination)
                .distinct()
                .where(
                    Transfer.state.in_(_DUE_STATES),
                    Transfer.next_attempt_at <= now,
                    Transfer.destination.not_in(busy),
                )
            )
        )


def retry_dead(
    session: Session,
    *,
    facility: str | None = None,
    route: str | None = None,
    destination: str | None = None,
) -> dict[str, int]:
    """Dead transfers (of a facility / route / destination) are pending again with a fresh
    count of attempts; how many per destination."""
    query = select(Transfer.id, Transfer.destination).where(
        Transfer.state == TransferState.DEAD.value
    )
    if facility is not None or route is not None:
        query = query.join(RouteRow, RouteRow.id == Transfer.route_id).join(
            Facility, Facility.id == RouteRow.facility_id
        )
        if facility is not None:
            query = query.where(Facility.name == facility)
        if route is not None:
            query = query.where(RouteRow.name == route)
    if destination is not None:
        query = query.where(Transfer.destination == destination)
    counts: dict[str, int] = {}
    ids: list[int] = []
    for transfer_id, dest in session.execute(query):
        ids.append(transfer_id)
        counts[dest] = counts.get(dest, 0) + 1
    for start in range(0, len(ids), 500):
        session.execute(
            update(Transfer)
            .where(Transfer.id.in_(ids[start : start + 500]), Transfer.state == "dead")
            .values(state=TransferState.PENDING.value, attempts=0, next_attempt_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    return counts


@dataclass
class DestinationProgress:
    destination: str
    pending: int = 0  # pending and sending
    sent: int = 0
    failed: int = 0
    dead: int = 0
    last_error: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "destination": self.destination,
            "pending": self.pending,
            "sent": self.sent,
            "failed": self.failed,
            "dead": self.dead,
            "lastError": self.last_error,
        }


def progress(
    session: Session, route_ids: list[int] | None = None
) -> dict[int, list[DestinationProgress]]:
    """Per route, per destination: transfers in each state and the latest error. The
    transfers not sent yet are counted (few, found through their state's index); the sent
    ones are read from their counters."""
    query = (
        select(Transfer.route_id, Transfer.destination, Transfer.state, func.count())
        .where(Transfer.state != TransferState.SENT.value)
        .group_by(Transfer.route_id, Transfer.destination, Transfer.state)
    )
    counters = select(RouteSent.route_id, RouteSent.destination, RouteSent.sent)
    if route_ids is not None:
        query = query.where(Transfer.route_id.in_(route_ids))
        counters = counters.where(RouteSent.route_id.in_(route_ids))
    table: dict[tuple[int, str], DestinationProgress] = {}
    for route_id, destination, sent in session.execute(counters):
        table.setdefault((route_id, destination), DestinationProgress(destination)).sent = sent
    for route_id, destination, state, count in session.execute(query):
        entry = table.setdefault((route_id, destination), DestinationProgress(destination))
        if state in (TransferState.PENDING.value, TransferState.SENDING.value):
            entry.pending += count
        elif state == TransferState.FAILED.value:
            entry.failed += count
        elif state == TransferState.DEAD.value:
            entry.dead += count
    for (route_id, destination), entry in table.items():
        if entry.failed or entry.dead or entry.pending:
            entry.last_error = (
                session.scalar(
                    select(Transfer.last_error)
                    .where(
                        Transfer.route_id == route_id,
                        Transfer.destination == destination,
                        Transfer.state != TransferState.SENT.value,
                        Transfer.last_error != "",
                    )
                    .order_by(Transfer.next_attempt_at.desc())
                    .limit(1)
                )
                or ""
            )
    result: dict[int, list[DestinationProgress]] = {}
    for (route_id, _), entry in sorted(table.items()):
        result.setdefault(route_id, []).append(entry)
    return result
