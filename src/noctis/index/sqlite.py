"""The index on SQLite (the embedded archive): one file, one writer at a time.

The connections run in WAL mode with synchronous=FULL (an acknowledged store survives a power
loss); a write transaction takes SQLite's write lock up front (BEGIN IMMEDIATE), a read-only
one takes none, so readers never wait for the writer. Writers of one file queue on
`SqliteWriteLock` and take turns at once; the write itself is `noctis.index.sqlite_write`,
on a connection kept for it (`_IngestWriter`).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from noctis.index import sqlite_write
from noctis.index.backend import READ_ONLY, IndexBackend, IndexedInstance, InstanceRecord

# Seconds a connection waits for another writer before it fails ("database is locked").
WRITE_WAIT = 30


class SqliteWriteLock:
    """One writer at a time across the threads and processes of this SQLite file.

    SQLite admits one writer; its busy handler makes the others sleep in growing steps (up to
    100 ms), which is what several SCP processes storing into one file did at each collision.
    Writers queue here instead and take turns at once: a thread lock within the process, then
    an exclusive ``flock`` on ``<database>.write-lock`` across processes (the kernel wakes the
    next waiter when it is released).
    """

    def __init__(self, database: Path) -> None:
        self._path = database.with_name(database.name + ".write-lock")
        self._threads = threading.Lock()
        self._fd: int | None = None

    def __enter__(self) -> SqliteWriteLock:
        self._threads.acquire()
        try:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        with self._threads:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class _IngestWriter:
    """The connection every index write of ingest runs on, one per process, used only under
    the write lock (which makes writes take turns anyway), its transaction the driver's own.

    Taking a pooled connection per instance and giving it back (checkout, reset, checkin),
    and SQLAlchemy's transaction around four statements, cost about a sixth of the SCP's
    Python time per CT instance, held under the write lock. SQLite connections of a file
    database may move between threads (SQLAlchemy opens them with check_same_thread off).
    A connection that failed, or was opened by the process this one was forked from, is
    replaced."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None
        self._pid = 0

    def write(self, record: InstanceRecord) -> IndexedInstance:
        """`sqlite_write.write_instance` in a transaction of its own (BEGIN IMMEDIATE):
        committed when this returns, rolled back when it raises."""
        conn = self._connection()
        try:
            driver = conn.connection.driver_connection
            driver.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
            try:
                indexed = sqlite_write.write_instance(conn, record)
            except BaseException:
                driver.rollback()  # type: ignore[union-attr]
                raise
            driver.commit()  # type: ignore[union-attr]
        except (SQLAlchemyError, sqlite3.Error):
            self.discard()
            raise
        return indexed

    def _connection(self) -> Connection:
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated or self._pid != os.getpid():
            self._conn = conn = self._engine.connect()
            self._pid = os.getpid()
        return conn

    def discard(self) -> None:
        """Close the connection (after a database error, or at close); the next write opens
        another."""
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            conn.close()


class SqliteIndex(IndexBackend):
    name = "sqlite"
    insert = staticmethod(sqlite.insert)

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        database = engine.url.database
        # An in-memory database lives in one process: a thread lock is enough.
        self.write_lock: AbstractContextManager[object] = (
            SqliteWriteLock(Path(database))
            if database and database != ":memory:"
            else threading.Lock()
        )
        # An in-memory database is one per connection's thread: writes take a pooled one.
        self._writer = _IngestWriter(engine) if database and database != ":memory:" else None

    @classmethod
    def open(cls, url: str) -> SqliteIndex:
        return cls(make_engine(url))

    def write_instance(self, record: InstanceRecord) -> IndexedInstance:
        with self.write_lock:
            if self._writer is None:
                with self.engine.begin() as conn:
                    return sqlite_write.write_instance(conn, record)
            return self._writer.write(record)

    def best_effort_sessions(self, wait_seconds: float) -> sessionmaker[Session]:
        engine = create_engine(self.engine.url, connect_args={"timeout": wait_seconds})
        event.listen(engine, "connect", _best_effort_pragmas)
        return sessionmaker(engine, expire_on_commit=False)

    def close(self) -> None:
        if self._writer is not None:
            with self.write_lock:
                self._writer.discard()
        super().close()
        if isinstance(self.write_lock, SqliteWriteLock):
            self.write_lock.close()


def make_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": WRITE_WAIT})
    event.listen(engine, "connect", _pragmas)
    event.listen(engine, "begin", _begin)
    return engine


def _pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # autocommit at the driver; SQLAlchemy sends BEGIN
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: each commit syncs the WAL before it returns, so an acknowledged store survives a
    # power loss (NORMAL syncs only at checkpoints: a commit could vanish with the OS).
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={WRITE_WAIT * 1000}")
    cursor.close()


def _begin(conn: Any) -> None:
    # pysqlite defers BEGIN on its own; we emit it. A write transaction takes the write lock
    # up front (BEGIN IMMEDIATE), so it waits for another writer instead of failing when it
    # first writes; a read-only one (`IndexBackend.reader`) takes no lock: in WAL mode
    # readers never wait for the writer.
    if conn.get_execution_options().get(READ_ONLY):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _best_effort_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # Such a row survives a crash of the process, not a power loss (the WAL is synced at
    # checkpoints): a sync per audited read would cost each frame request ~0.3 ms. Stores,
    # which the archive acknowledges, run on the main engine with synchronous=FULL.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
