"""`noctis migrate --wait`: wait for a database that is still starting, not for a wrong one."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.engine import make_url

from noctis.index.migrate import DatabaseUnavailable, wait_for_database
from support.ports import free_port

MIGRATE_LOGGER = "noctis.index.migrate"


def retries(caplog: pytest.LogCaptureFixture) -> int:
    """How many times wait_for_database said it was waiting (once per retry)."""
    return sum(
        record.name == MIGRATE_LOGGER and "waiting for the database" in record.getMessage()
        for record in caplog.records
    )


def test_an_answering_database_is_not_waited_for(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=MIGRATE_LOGGER)
    wait_for_database(pg_url, timeout=10)
    assert retries(caplog) == 0


def test_a_database_that_never_answers_fails_after_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=MIGRATE_LOGGER)
    url = f"postgresql+psycopg://noctis:pw@127.0.0.1:{free_port()}/noctis"
    with pytest.raises(DatabaseUnavailable, match="did not answer within 2 s"):
        wait_for_database(url, timeout=2, interval=0.5)
    assert retries(caplog) >= 2  # it kept trying before it gave up


def test_a_refused_password_fails_at_once_without_showing_it(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=MIGRATE_LOGGER)
    wrong = make_url(pg_url).set(password="not-the-password")
    with pytest.raises(DatabaseUnavailable, match="refused us") as caught:
        wait_for_database(wrong.render_as_string(hide_password=False), timeout=30)
    assert retries(caplog) == 0  # no retry: waiting would not mend it
    assert "not-the-password" not in str(caught.value)
