"""The runtime context every Noctis process opens from its settings: index, object store,
task queue and notices. ("Archive" names only the custom resource; this is what a process runs
on.)"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from noctis.core.audit import DatabaseAuditSink
from noctis.core.notices import SeriesNotices
from noctis.core.queue import CeleryQueue, InProcessQueue, TaskQueue
from noctis.core.quota import FacilityQuotas
from noctis.dicom.metadata import BUNDLE_MINIMUM
from noctis.index.backend import IndexBackend, IndexUnavailable
from noctis.index.db import open_index
from noctis.settings import Settings
from noctis.storage import ObjectStore, StorageUnavailable, open_store


@dataclass
class Runtime:
    settings: Settings
    # The index on SQLite or PostgreSQL, chosen once from the database URL.
    index: IndexBackend
    store: ObjectStore
    queue: TaskQueue = field(default_factory=InProcessQueue)
    # Stored series, told to the tasks once per series per beat (noctis.core.notices).
    notices: SeriesNotices = field(init=False)
    # Where every process's audit events go (noctis.core.audit).
    audit: DatabaseAuditSink = field(init=False)
    # Each facility's quota, usage and storage pool, read every few seconds (noctis.core.quota).
    quotas: FacilityQuotas = field(init=False)

    def __post_init__(self) -> None:
        self.notices = SeriesNotices(lambda: self.queue, smallest_series=BUNDLE_MINIMUM)
        self.audit = DatabaseAuditSink(self.index)
        self.quotas = FacilityQuotas(self.reading, self.settings.quota_refresh_seconds)

    @classmethod
    def open(cls, settings: Settings, *, queue: TaskQueue | None = None) -> Runtime:
        index = open_index(settings.resolved_database_url())
        if queue is None:
            queue = CeleryQueue(settings.broker_url) if settings.broker_url else InProcessQueue()
        return cls(settings=settings, index=index, store=open_store(settings), queue=queue)

    @property
    def engine(self) -> Engine:
        return self.index.engine

    @property
    def sessions(self) -> sessionmaker[Session]:
        """Sessions for writing (and reading what was just written)."""
        return self.index.sessions

    @property
    def reader(self) -> sessionmaker[Session]:
        """Read-only sessions: on SQLite they take no write lock, so queries and retrievals
        run beside a store in progress. Writes always go through `sessions`."""
        return self.index.reader

    def readiness(self) -> dict[str, str]:
        """ "ok" or the reason, per dependency."""
        report: dict[str, str] = {}
        try:
            self.index.check()
            report["index"] = "ok"
        except IndexUnavailable as exc:
            report["index"] = str(exc)
        try:
            self.store.check()
            report["objects"] = "ok"
        except StorageUnavailable as exc:
            report["objects"] = str(exc)
        except Exception as exc:
            report["objects"] = f"object store unreachable: {type(exc).__name__}"
        return report

    def reading(self) -> AbstractContextManager[Connection]:
        """A read-only Core connection (no ORM session): for the hot read paths of every
        request (credentials, WADO look-ups). On SQLite it takes no write lock."""
        return self.index.reading()

    def drain_tasks(self) -> None:
        """Send pending notices and, on the in-process queue, run every task until none is
        left (shutdown of `noctis serve`, tests)."""
        self.notices.flush()
        if isinstance(self.queue, InProcessQueue):
            self.queue.drain()

    def close(self) -> None:
        self.notices.close()
        self.audit.close()
        self.index.close()
