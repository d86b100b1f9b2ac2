"""Engines and sessions for the index (PostgreSQL via psycopg 3, or SQLite)."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from types import TracebackType

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)


class IndexUnavailable(RuntimeError):
    """The index database could not be reached."""


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
    )
    ping_idle_connections(engine)
    event.listen(engine, "connect", _postgresql_durable_commits)
    return engine


def _postgresql_durable_commits(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    """A commit the archive acknowledges must be on disk: never run with synchronous_commit
    off, whatever the server, database or role default says (``local``, ``on``,
    ``remote_write`` and ``remote_apply`` are all durable on this server, and are kept)."""
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        row = cursor.fetchone()
        if row is not None and row[0] == "off":
            log.warning("synchronous_commit is off for this database: the archive turns it on")
            cursor.execute("SET synchronous_commit TO on")
    dbapi_connection.commit()


# A pooled connection used less than this long ago is taken to be alive.
PING_AFTER_IDLE_SECONDS = 1.0
_IDLE_SINCE = "noctis_idle_since"


def ping_idle_connections(engine: Engine, idle_seconds: float = PING_AFTER_IDLE_SECONDS) -> None:
    """Check a pooled connection before it is used again, if it sat idle for a while.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: one more round trip for each of
    the two a store makes. A connection that served a request a moment ago is alive; one that
    sat idle may have been cut by a server restart or a firewall, and a failed ping makes the
    pool replace it before anyone uses it (SQLAlchemy's pessimistic disconnect handling).
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection, record) -> None:  # type: ignore[no-untyped-def]
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, _proxy) -> None:  # type: ignore[no-untyped-def]
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out another (or a new one).
            raise DisconnectionError(f"pooled connection is dead: {type(exc).__name__}") from exc


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    dbapi_connection.isolation_level = None  # autocommit at the driver; SQLAlchemy sends BEGIN
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: each commit syncs the WAL before it returns, so an acknowledged store survives a
    # power loss (NORMAL syncs only at checkpoints: a commit could vanish with the OS).
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


READ_ONLY = "noctis_read_only"


def _sqlite_begin(conn) -> None:  # type: ignore[no-untyped-def]
    # pysqlite defers BEGIN on its own; we emit it. A write transaction takes the write lock
    # up front (BEGIN IMMEDIATE), so it waits for another writer instead of failing when it
    # first writes; a read-only one (see make_reader) takes no lock: in WAL mode readers
    # never wait for the writer.
    if conn.get_execution_options().get(READ_ONLY):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


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


def write_lock(engine: Engine) -> AbstractContextManager[object]:
    """What index writers hold around a write transaction: SqliteWriteLock on a SQLite file,
    nothing on PostgreSQL (row locks do the work) or an in-memory SQLite database."""
    url = engine.url
    if url.get_backend_name() != "sqlite":
        return nullcontext()
    if not url.database or url.database == ":memory:":
        return threading.Lock()
    return SqliteWriteLock(Path(url.database))


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def make_reader(engine: Engine) -> sessionmaker[Session]:
    """Sessions for reading only: on SQLite they never wait for (or block) a writer; on
    PostgreSQL they run in autocommit, so a read costs no BEGIN and ROLLBACK round trips (READ
    COMMITTED takes a snapshot per statement either way)."""
    options: dict[str, object] = {READ_ONLY: True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "AUTOCOMMIT"
    return sessionmaker(engine.execution_options(**options), expire_on_commit=False)


@contextmanager
def index_write(engine: Engine, lock: AbstractContextManager[object]) -> Iterator[Connection]:
    """The connection for one index write (`noctis.index.upsert.write_instance`): on SQLite a
    write transaction, under ``lock`` (see `write_lock`), committed when the block ends; on
    PostgreSQL an autocommit connection, on which the write's one function call commits."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn
        return
    with lock, engine.begin() as conn:
        yield conn


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: committed when the block ends, rolled back if it raises."""
    with sessions.begin() as session:
        yield session


def check(engine: Engine) -> None:
    """Raise IndexUnavailable unless the database answers."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "not ready"
        raise IndexUnavailable(f"index database unreachable: {type(exc).__name__}") from exc
