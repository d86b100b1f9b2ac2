"""The runtime context every Noctis process opens from its settings: index, object store,
task queue and notices. ("Archive" names only the custom resource; this is what a process runs
on.)"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from noctis.core.audit import DatabaseAuditSink
from noctis.core.notices import SeriesNotices
from noctis.core.queue import CeleryQueue, InProcessQueue, TaskQueue
from noctis.dicom.metadata import BUNDLE_MINIMUM
from noctis.index import db
from noctis.settings import Settings
from noctis.storage import ObjectStore, StorageUnavailable, open_store


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ObjectStore
    queue: TaskQueue = field(default_factory=InProcessQueue)
    # Read-only sessions: on SQLite they take no write lock, so queries and retrievals
    # run beside a store in progress. Writes always go through `sessions`.
    reader: sessionmaker[Session] = field(init=False)
    # Held around index writes: writers of one SQLite file queue on it and take turns at once
    # (db.SqliteWriteLock); nothing on PostgreSQL.
    write_lock: AbstractContextManager[object] = field(init=False)
    # Stored series, told to the tasks once per series per beat (noctis.core.notices).
    notices: SeriesNotices = field(init=False)
    # Where every process's audit events go (noctis.core.audit).
    audit: DatabaseAuditSink = field(init=False)

    def __post_init__(self) -> None:
        self.reader = db.make_reader(self.engine)
        self.audit = DatabaseAuditSink(self.sessions)
        self.notices = SeriesNotices(lambda: self.queue, smallest_series=BUNDLE_MINIMUM)
        self.write_lock = db.write_lock(self.engine)

    @classmethod
    def open(cls, settings: Settings, *, queue: TaskQueue | None = None) -> Runtime:
        engine = db.make_engine(settings.resolved_database_url())
        if queue is None:
            queue = CeleryQueue(settings.broker_url) if settings.broker_url else InProcessQueue()
        return cls(
            settings=settings,
            engine=engine,
            sessions=db.make_sessionmaker(engine),
            store=open_store(settings),
            queue=queue,
        )

    def readiness(self) -> dict[str, str]:
        """ "ok" or the reason, per dependency."""
        report: dict[str, str] = {}
        try:
            db.check(self.engine)
            report["index"] = "ok"
        except db.IndexUnavailable as exc:
            report["index"] = str(exc)
        try:
            self.store.check()
            report["objects"] = "ok"
        except StorageUnavailable as exc:
            report["objects"] = str(exc)
        except Exception as exc:
            report["objects"] = f"object store unreachable: {type(exc).__name__}"
        return report

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only Core connection (no ORM session): for the hot read paths of every
        request (credentials, WADO look-ups). On SQLite it takes no write lock."""
        with self.reader.kw["bind"].connect() as conn:
            try:
                yield conn
            finally:
                conn.rollback()

    def drain_tasks(self) -> None:
        """Send pending notices and, on the in-process queue, run every task until none is
        left (shutdown of `noctis serve`, tests)."""
        self.notices.flush()
        if isinstance(self.queue, InProcessQueue):
            self.queue.drain()

    def close(self) -> None:
        self.notices.close()
        self.audit.close()
        self.engine.dispose()
        if isinstance(self.write_lock, db.SqliteWriteLock):
            self.write_lock.close()
