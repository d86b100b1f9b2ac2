"""The audit trail: who read or wrote which patient data, from where, with what outcome.

One value type, `AuditEvent`, and one sink interface, `AuditSink`. The processes only make
events (the API from its request and principal, the SCP from its association, ingest from its
sender) and hand them to a sink; `DatabaseAuditSink` (``runtime.audit``) writes them as rows of
the index's audit table.

Recording never fails the caller and never waits long on the index: the row is inserted at
once in its own short transaction (so it is committed before the caller answers); on SQLite
(one writer at a time) that insert gives up after a quarter of a second, for instance when
the caller still holds an index transaction of its own, and the event goes to a bounded
in-memory queue that a writer thread drains. If the index refuses the row, the event goes to
the log (logger ``noctis.core.audit``) instead. `flush()` waits for the queue (the audit query
endpoint, tests); closing the runtime, or the process exiting, drains it.

An event that must commit, or not, with the change it describes (administrative changes) is
added to that change's session with `add_to_session` instead.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Protocol

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from noctis.index import accounts
from noctis.index.backend import IndexBackend
from noctis.index.models import utcnow

log = logging.getLogger(__name__)

ActorType = Literal["user", "token", "ae", "system"]

MAX_PENDING = 50_000
MAX_BATCH = 500
SQLITE_WAIT = 0.25  # seconds an inline insert waits for SQLite's write lock

_INSERT_AUDIT = insert(accounts.AuditRow.__table__)


class AuditAction(StrEnum):
    """The usual actions; callers may record others (keep them short, lower-case)."""

    QUERY = "query"  # QIDO-RS, C-FIND
    RETRIEVE = "retrieve"  # WADO-RS, rendered, thumbnails, C-GET
    MOVE = "move"  # C-MOVE (to another AE)
    STORE = "store"  # STOW-RS, C-STORE
    LOGIN = "login"
    LOGOUT = "logout"
    ADMIN = "admin"  # users, tokens, settings changed


class AuditOutcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"  # the request was allowed but did not complete
    DENIED = "denied"  # not allowed (authentication, role or facility)


@dataclass(frozen=True, kw_only=True)
class AuditEvent:
    """One read or write of patient data (or a security event)."""

    action: str
    outcome: str
    actor: str  # user name, token owner, OIDC subject or AE title
    actor_type: ActorType
    client: str  # the caller's network address
    study_instance_uid: str | None = None  # the study read or written, if one
    facility_id: int | None = None
    detail: dict[str, Any] | None = None
    at: datetime = field(default_factory=utcnow)  # when it happened, not when it was written

    def columns(self) -> dict[str, Any]:
        """The audit table's column values, cut to their sizes."""
        study = self.study_instance_uid
        return {
            "at": self.at,
            "actor": self.actor[:255],
            "actor_type": self.actor_type,
            "client": self.client[:255],
            "action": str(self.action)[:64],
            "outcome": str(self.outcome)[:32],
            "study_instance_uid": study[:64] if study else None,
            "facility_id": self.facility_id,
            "detail": self.detail or None,
        }


class AuditSink(Protocol):
    def record(self, event: AuditEvent) -> None:
        """Record one event; never raises."""


def add_to_session(session: Session, event: AuditEvent) -> None:
    """Add the event's row to an open index session: it commits, or not, with that session."""
    session.add(accounts.AuditRow(**event.columns()))


@dataclass(frozen=True)
class Actor:
    """Who makes a change: a person (their principal's subject), an AE, or the archive."""

    subject: str
    type: ActorType = "user"
    client: str = ""

    @classmethod
    def system(cls, what: str) -> Actor:
        return cls(subject=f"noctis:{what}", type="system", client="")


def record_change(
    session: Session,
    actor: Actor,
    action: str,
    change: str,
    *,
    facility_id: int | None,
    study_instance_uid: str | None = None,
    **detail: Any,
) -> None:
    """Audit a successful change (``detail["change"]`` names it) in the change's own session."""
    add_to_session(
        session,
        AuditEvent(
            action=action,
            outcome=AuditOutcome.SUCCESS,
            actor=actor.subject,
            actor_type=actor.type,
            client=actor.client,
            study_instance_uid=study_instance_uid,
            facility_id=facility_id,
            detail={"change": change, **detail},
        ),
    )


class DatabaseAuditSink:
    """Writes events as rows of the index's audit table."""

    def __init__(self, index: IndexBackend) -> None:
        self._index = index
        self._sessions = index.sessions
        # The inline insert waits at most SQLITE_WAIT for SQLite's write lock (the runtime's
        # engine waits 30 s), and its rows survive a crash of the process, not a power loss:
        # a disk sync per audited read would slow every frame request. Stores themselves,
        # which the archive acknowledges, are synced.
        self._inline = index.best_effort_sessions(SQLITE_WAIT)
        self._inline_engine: Engine = self._inline.kw["bind"]
        self._queue: queue.Queue[AuditEvent | None] = queue.Queue(MAX_PENDING)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def record(self, event: AuditEvent) -> None:
        try:
            with self._inline_engine.begin() as connection:
                connection.execute(_INSERT_AUDIT, event.columns())
            return
        except Exception as exc:  # locked, or the index is down: the writer retries
            log.debug("audit event queued (%s)", type(exc).__name__)
        self._enqueue(event)

    def record_durably(self, event: AuditEvent) -> None:
        """Record an event the archive relies on later (what an administrator must reconcile):
        written on the runtime's engine, synced like a store and waiting for the write lock as a
        store does, before this returns; only if that fails, queued like any other event."""
        try:
            with self._sessions.begin() as session:
                session.execute(_INSERT_AUDIT, event.columns())
            return
        except Exception as exc:
            log.warning("audit event %s not written at once (%s): queued", event.action, exc)
        self._enqueue(event)

    def _enqueue(self, event: AuditEvent) -> None:
        self._ensure_writer()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            log.error("audit queue full, %s", _not_recorded(event))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event recorded so far is written (or failed and logged)."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, stop the writer, release the inline engine."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None
        self._index.close_sessions(self._inline)

    def _ensure_writer(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="noctis-audit", daemon=True)
                thread.start()
                self._thread = thread
                atexit.register(self.close)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            events = [e for e in batch if e is not None]
            try:
                if events:
                    self._write(events)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if len(events) < len(batch):
                return  # close() asked us to stop; what came before is written

    def _write(self, events: list[AuditEvent]) -> None:
        try:
            with self._sessions.begin() as session:
                session.execute(_INSERT_AUDIT, [e.columns() for e in events])
        except Exception:
            log.exception("%d audit events not recorded", len(events))
            for e in events:
                log.error("%s", _not_recorded(e))


def _not_recorded(event: AuditEvent) -> str:
    return (
        f"audit event not recorded: actor={event.actor} type={event.actor_type} "
        f"client={event.client} action={event.action} outcome={event.outcome} "
        f"study={event.study_instance_uid} facility={event.facility_id} detail={event.detail}"
    )


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
) -> Sequence[accounts.AuditRow]:
    """Matching rows, newest first."""
    row = accounts.AuditRow
    query = select(row)
    for column, value in (
        (row.actor, where.actor),
        (row.actor_type, where.actor_type),
        (row.action, where.action),
        (row.outcome, where.outcome),
        (row.study_instance_uid, where.study_instance_uid),
        (row.facility_id, where.facility_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.since is not None:
        query = query.where(row.at >= where.since)
    if where.until is not None:
        query = query.where(row.at < where.until)
    query = query.order_by(row.at.desc(), row.id.desc())
    return session.scalars(query.limit(limit).offset(offset)).all()
