"""The API's audit sink (``app.state.audit``): DICOMweb and REST events into the audit trail.

`record` never waits on the index: events go to a bounded in-memory queue that one writer
thread drains into the audit table, many rows per transaction. A router may therefore
record while it holds an index transaction of its own (SQLite admits one writer: a
synchronous insert there would wait for the router's own transaction to end). The queue is
flushed when the process exits; `flush()` waits for it (tests, the audit query endpoint).
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from noctis.api.security import Principal
from noctis.audit import ActorType, audit_event

log = logging.getLogger("noctis.audit")

MAX_PENDING = 50_000
MAX_BATCH = 500


def actor_type(principal: Principal | None) -> ActorType:
    return "token" if principal is not None and principal.method == "token" else "user"


class DatabaseAuditSink:
    """Writes events as rows of the index's audit table (see `noctis.audit`)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
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
        event = {
            "actor": principal.subject if principal is not None else "anonymous",
            "actor_type": actor_type(principal),
            "client": client,
            "action": action,
            "outcome": outcome,
            "study_instance_uid": study_instance_uid,
            "facility_id": facility_id,
            "detail": detail,
        }
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
