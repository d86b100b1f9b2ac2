"""Alembic migrations, configured in code (no alembic.ini to ship)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
log = logging.getLogger(__name__)


class DatabaseUnavailable(RuntimeError):
    """The database did not answer within the time given."""


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def wait_for_database(url: str, timeout: float, interval: float = 2.0) -> float:
    """Connect until the database answers (a server starting beside us, e.g. the chart's
    quickstart PostgreSQL); the seconds waited. Raises DatabaseUnavailable with the last
    error after ``timeout`` seconds."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    engine = create_engine(url, pool_pre_ping=False)
    started = time.monotonic()
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                return time.monotonic() - started
            except OperationalError as exc:
                waited = time.monotonic() - started
                reason = " ".join(str(exc.orig or exc).split())
                if "authentication failed" in reason:  # waiting would not mend it
                    raise DatabaseUnavailable(f"the database refused us: {reason}") from exc
                if waited + interval > timeout:
                    raise DatabaseUnavailable(
                        f"the database did not answer within {timeout:.0f} s: {reason}"
                    ) from exc
                log.info("waiting for the database (%.0f s so far)", waited)
                time.sleep(interval)
    finally:
        engine.dispose()
