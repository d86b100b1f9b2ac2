"""Asking a signed-in user for their password again before an act that carries their name
(signing a report): checked as the login checks it, through the same rate limit, the same
shared lockout and the same hashing gate, so the signing form is no way around them.

Only accounts with a local password can do this. An OpenID Connect user has no password here
and the archive cannot make the identity provider re-authenticate them within one form post,
so such a user is refused with a message saying so (an administrator may give the account a
local password for signing). API tokens act for their owner: the owner's password is asked.
"""

from __future__ import annotations

import math
from functools import partial

from fastapi import HTTPException, status
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from noctis.api.auth.context import AuthContext
from noctis.api.auth.flood import HashingBusy
from noctis.api.auth.lockout import clear_attempts
from noctis.api.auth.password_login import abandon_attempt, begin_attempt, verify
from noctis.api.security import Principal
from noctis.index.accounts import User


class Reauthentication(HTTPException):
    """The password was not confirmed: why, with the status to answer."""


async def confirm_password(
    context: AuthContext, principal: Principal, password: str, client: str
) -> None:
    """Return if ``password`` is the principal's; raise `Reauthentication` otherwise (403 wrong
    password or no local password, 429 locked out or over the rate limit, 503 busy)."""
    username = principal.subject
    if not await run_in_threadpool(_has_local_password, context, username):
        raise Reauthentication(
            status.HTTP_403_FORBIDDEN,
            detail="signing needs your local password, and this account has none (it signs "
            "in through the identity provider): ask an administrator to set one",
        )
    wait = context.rate_limiter.take(client)
    if wait is not None:
        raise _retry_later("too many password attempts from your address", wait)
    attempt = await run_in_threadpool(
        begin_attempt, context.runtime, context.auth, username, client
    )
    if attempt.locked_for is not None:
        raise _retry_later("too many failed attempts: wait a few minutes", attempt.locked_for)
    try:
        verdict = await context.hashing.run(partial(verify, attempt.password_hash, password))
    except HashingBusy:
        await run_in_threadpool(abandon_attempt, context.runtime, username, client, attempt)
        raise _retry_later("the archive is busy checking passwords", 1, 503) from None
    if not verdict.matched:
        raise Reauthentication(status.HTTP_403_FORBIDDEN, detail="wrong password")
    await run_in_threadpool(_clear, context, username, client)


def _has_local_password(context: AuthContext, username: str) -> bool:
    with context.runtime.reader() as session:
        stored = session.scalar(
            select(User.password_hash).where(User.username == username, User.enabled.is_(True))
        )
    return bool(stored)


def _clear(context: AuthContext, username: str, client: str) -> None:
    with context.runtime.sessions.begin() as session:
        clear_attempts(session, username, client)


def _retry_later(message: str, seconds: float, code: int = 429) -> Reauthentication:
    return Reauthentication(
        code, detail=message, headers={"Retry-After": str(max(1, math.ceil(seconds)))}
    )
