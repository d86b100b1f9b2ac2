"""`noctis migrate --wait`: wait for a database that is still starting, not for a wrong one."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.engine import make_url

from noctis.index.migrate import DatabaseUnavailable, wait_for_database
from support.ports import free_port


def test_an_answering_database_is_not_waited_for(pg_url: str) -> None:
    assert wait_for_database(pg_url, timeout=10) < 5


def test_a_database_that_never_answers_fails_after_the_timeout() -> None:
    url = f"postgresql+psycopg://noctis:pw@127.0.0.1:{free_port()}/noctis"
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="did not answer within 2 s"):
        wait_for_database(url, timeout=2, interval=0.5)
    assert 1.0 < time.monotonic() - started < 5


def test_a_refused_password_fails_at_once_without_showing_it(pg_url: str) -> None:
    wrong = make_url(pg_url).set(password="not-the-password")
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="refused us") as caught:
        wait_for_database(wrong.render_as_string(hide_password=False), timeout=30)
    assert time.monotonic() - started < 10
    assert "not-the-password" not in str(caught.value)
