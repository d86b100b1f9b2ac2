"""A password login in three steps, so that no database transaction is held while a
password is hashed and the hashing can be bounded (``noctis.api.auth.flood``):

1. `begin_attempt`: count the attempt in the shared lockout (atomic, committed at once)
   and read the user's password hash;
2. `verify`: the argon2 verification (and a rehash when the parameters changed), run
   through the hashing gate; an unknown user name costs one verification too. If the gate
   is full, `abandon_attempt` un-counts the attempt: a login turned away for load (503) was
   never checked, so it is no failure and must not lock the account out;
3. `open_login_session`: if the password matched and the account did not change in the
   meantime, clear the count and open the browser session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from noctis.api.auth.credentials import open_session, purge_expired_sessions
from noctis.api.auth.lockout import (
    clear_attempts,
    purge_stale_attempts,
    release_attempt,
    reserve_attempt,
)
from noctis.api.auth.settings import AuthSettings
from noctis.core import passwords
from noctis.core.runtime import Runtime
from noctis.index.accounts import User

PURGE_INTERVAL = 60.0  # seconds between sweeps of ended lockout windows, per process
_last_purge = 0.0


@dataclass(frozen=True)
class Attempt:
    locked_for: float | None  # seconds until the lockout ends; None: may be checked
    user_id: int | None
    password_hash: str | None  # None: unknown, disabled or password-less user
    window_start: datetime | None = None  # of the lockout window it was counted in


@dataclass(frozen=True)
class Verdict:
    matched: bool
    new_hash: str | None = None  # the password hashed with today's parameters, if needed


def begin_attempt(runtime: Runtime, auth: AuthSettings, username: str, client: str) -> Attempt:
    global _last_purge
    window = timedelta(seconds=auth.login_lockout_seconds)
    with runtime.sessions.begin() as session:
        reserved = reserve_attempt(
            runtime.index,
            session,
            username,
            client,
            max_attempts=auth.login_max_failures,
            window=window,
        )
        if time.monotonic() - _last_purge > PURGE_INTERVAL:
            _last_purge = time.monotonic()
            purge_stale_attempts(session, window)
        if reserved.locked_for is not None:
            return Attempt(reserved.locked_for, None, None)
        row = session.execute(
            select(User.id, User.password_hash).where(
                User.username == username, User.enabled.is_(True)
            )
        ).first()
    if row is None:
        return Attempt(None, None, None, reserved.window_start)
    return Attempt(None, row.id, row.password_hash, reserved.window_start)


def abandon_attempt(runtime: Runtime, username: str, client: str, attempt: Attempt) -> None:
    """Un-count an attempt whose password was not checked (the hashing gate was full)."""
    if attempt.window_start is None:
        return
    with runtime.sessions.begin() as session:
        release_attempt(session, username, client, attempt.window_start)


def verify(password_hash: str | None, password: str) -> Verdict:
    """The expensive part, the same for unknown and known user names."""
    if not passwords.verify_password(password_hash, password) or password_hash is None:
        return Verdict(False)
    if passwords.needs_rehash(password_hash):
        return Verdict(True, passwords.hash_password(password))
    return Verdict(True)


def open_login_session(
    runtime: Runtime,
    auth: AuthSettings,
    attempt: Attempt,
    verdict: Verdict,
    *,
    username: str,
    client: str,
    user_agent: str,
) -> str | None:
    """The session cookie value, or None if the account was disabled or its password
    changed while the password was being checked."""
    with runtime.sessions.begin() as session:
        user = session.get(User, attempt.user_id) if attempt.user_id is not None else None
        if user is None or not user.enabled or user.password_hash != attempt.password_hash:
            return None
        if verdict.new_hash is not None:
            user.password_hash = verdict.new_hash
        clear_attempts(session, username, client)
        purge_expired_sessions(session)  # housekeeping, at the pace of logins
        return open_session(
            session,
            user,
            lifetime=timedelta(seconds=auth.session_lifetime_seconds),
            client=client,
            user_agent=user_agent,
        )
