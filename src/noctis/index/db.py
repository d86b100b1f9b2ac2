"""Opening the index: the backend for a database URL (PostgreSQL via psycopg 3, or SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from noctis.index import postgresql, sqlite
from noctis.index.backend import IndexBackend


def open_index(url: str, *, pool_size: int = 5) -> IndexBackend:
    """The index on the database ``url`` names: the one place that asks which database."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return sqlite.SqliteIndex.open(url)
    if backend == "postgresql":
        return postgresql.PostgresqlIndex.open(url, pool_size=pool_size)
    raise ValueError(f"the index supports PostgreSQL and SQLite, not {backend}")


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine with the index's connection settings, for a process that needs only that
    (the operator registers facilities)."""
    return open_index(url, pool_size=pool_size).engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: committed when the block ends, rolled back if it raises."""
    with sessions.begin() as session:
        yield session
