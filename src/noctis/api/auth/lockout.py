"""Failed-login lockout, counted in the index so that every API process shares it.

An attempt is counted BEFORE its password is checked, with one atomic upsert that returns
the new count (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``, on SQLite and on
PostgreSQL): of thirty parallel attempts, only the first `max_attempts` are evaluated and
the others are refused as locked, whichever process they reach. A successful login clears
the count; failures stay counted until the window (started by the first attempt) is over.
An attempt refused before its password was checked (the hashing gate was full: 503) is
released again: being turned away for load is not a failed login. Keyed by user name and
client address, so that nobody can lock a user out from elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from noctis.api.auth.credentials import aware, now
from noctis.index.accounts import LoginLockout
from noctis.index.backend import IndexBackend


def _key(username: str, client: str) -> tuple[str, str]:
    return username.lower()[:150], client[:64]


@dataclass(frozen=True)
class Reservation:
    locked_for: float | None  # None: the password may be checked; else seconds until it may
    window_start: datetime  # of the window the attempt was counted in (to release it)


def reserve_attempt(
    index: IndexBackend,
    session: Session,
    username: str,
    client: str,
    *,
    max_attempts: int,
    window: timedelta,
) -> Reservation:
    """Count one attempt: whether its password may be checked, or for how long not."""
    name, address = _key(username, client)
    moment = now()
    attempts, window_start = index.count_login_attempt(session, name, address, moment, window)
    if attempts <= max_attempts:
        return Reservation(None, window_start)
    remaining = (aware(window_start) + window - moment).total_seconds()
    return Reservation(float(max(1, math.ceil(remaining))), window_start)


def release_attempt(session: Session, username: str, client: str, window_start: datetime) -> None:
    """Un-count an attempt whose password was never checked, in the window it was counted
    in only (a window begun since then holds none of it). Atomic like the count: parallel
    releases and reservations each see the other's change."""
    name, address = _key(username, client)
    session.execute(
        update(LoginLockout)
        .where(
            LoginLockout.username == name,
            LoginLockout.client == address,
            LoginLockout.window_start == window_start,
            LoginLockout.attempts > 0,
        )
        .values(attempts=LoginLockout.attempts - 1)
    )


def clear_attempts(session: Session, username: str, client: str) -> None:
    name, address = _key(username, client)
    session.execute(
        delete(LoginLockout).where(LoginLockout.username == name, LoginLockout.client == address)
    )


def purge_stale_attempts(
    session: Session, window: timedelta, moment: datetime | None = None
) -> int:
    """Forget counts whose window is over (housekeeping, at the pace of logins)."""
    cutoff = (moment or now()) - window
    result = session.execute(delete(LoginLockout).where(LoginLockout.window_start <= cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
