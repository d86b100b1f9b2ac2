"""The API's audit sink (``app.state.audit``): DICOMweb and REST events into the audit trail.

`record` writes the row at once, so it is committed before the response goes out. It never
waits long on the index: on SQLite (one writer at a time) the insert gives up after a
quarter of a second, for instance when the calling router still holds an index transaction
of its own, and the event goes to a bounded in-memory queue that a writer thread drains.
The queue is flushed when the process exits; `flush()` waits for it (tests, the audit
query endpoint).
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from typing import Any

from sqlalchemy import Engine

from noctis.api.security import Principal
from noctis.core.audit import ActorType, audit_event, audit_row, insert_audit_row
from noctis.index.backend import IndexBackend
from noctis.index.models import utcnow

log = logging.getLogger("noctis.core.audit")

MAX_PENDING = 50_000
MAX_BATCH = 500
SQLITE_WAIT = 0.25  # seconds an inline insert waits for SQLite's write lock


def actor_type(principal: Principal | None) -> ActorType:
    return "token" if principal is not None and principal.method == "token" else "user"


class DatabaseAuditSink:
    """Writes events as rows of the index's audit table (see `noctis.core.audit`)."""

    def __init__(self, index: IndexBackend) -> None:
        self._index = index
        self._sessions = index.sessions
        # The inline insert waits at most SQLITE_WAIT for SQLite's write lock.
        self._inline = index.best_effort_sessions(SQLITE_WAIT)
        self._inline_engine: Engine = self._inline.kw["bind"]
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(MAX_PENDING)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def record(
        self,
        *,
        principal: Principal | None,
        client: str,
        action: str,
        outcome: str,
        study_instance_uid: str | None = None,
        facility_id: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        if principal is not None and principal.method == "oidc":
            detail = {"method": "oidc", **(detail or {})}
        event: dict[str, Any] = {
            "at": utcnow(),  # when it happened, even if the row is written later
            "actor": principal.subject if principal is not None else "anonymous",
            "actor_type": actor_type(principal),
            "client": client,
            "action": action,
            "outcome": outcome,
            "study_instance_uid": study_instance_uid,
            "facility_id": facility_id,
            "detail": detail,
        }
        try:
            with self._inline_engine.begin() as connection:
                insert_audit_row(connection, audit_row(**event))
            return
        except Exception as exc:  # locked, or the index is down: the writer retries
            log.debug("audit event queued (%s)", type(exc).__name__)
        self._ensure_writer()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            log.error("audit queue full, event not recorded: %s", event)

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

    def _write(self, events: list[dict[str, Any]]) -> None:
        try:
            with self._sessions.begin() as session:
                session.add_all(audit_event(**e) for e in events)
        except Exception:
            log.exception("%d audit events not recorded: %s", len(events), events)
