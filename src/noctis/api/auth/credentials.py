"""API tokens and browser sessions: random secrets of which the index keeps only digests."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Connection, Row, Select, bindparam, delete, literal, select, update
from sqlalchemy.orm import Session

from noctis.api.security import Principal
from noctis.core.roles import Role
from noctis.index.accounts import ApiToken, User, UserFacility, WebSession
from noctis.index.models import Facility

TOKEN_PREFIX = "noctis_"
# How stale "last used" / "last seen" may get before a request writes it again: keeps
# ordinary requests read-only.
TOUCH_INTERVAL = timedelta(minutes=1)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def now() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; the index stores UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def issue_token(
    session: Session, user: User, name: str = "", *, expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """A new API token for `user`: the row, and the secret to show once."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        user_id=user.id,
        name=name,
        prefix=secret[: len(TOKEN_PREFIX) + 6],
        token_hash=digest(secret),
        expires_at=expires_at,
    )
    session.add(token)
    session.flush()
    return token, secret


def revoke_token(session: Session, token_id: int) -> bool:
    token = session.get(ApiToken, token_id)
    if token is None or token.revoked_at is not None:
        return False
    token.revoked_at = now()
    return True


@dataclass(frozen=True)
class LiveCredential:
    """A valid token or session: its row id, who it acts for, and when it was last used."""

    id: int
    principal: Principal
    last_used_at: datetime | None


def find_token(conn: Connection, secret: str) -> LiveCredential | None:
    """The live token with this secret (not revoked, not expired, its user enabled).

    One read, no write: the caller calls ``touch_token`` when ``is_stale``. Every API
    request runs this, so it is one Core query (token, user and grants joined), not ORM
    loads: a third of a small request's time otherwise.
    """
    found = _holder(conn, _statement("token"), digest(secret))
    if found is None:
        return None
    first, principal = found
    moment = now()
    if first.revoked_at is not None:
        return None
    if first.expires_at is not None and aware(first.expires_at) <= moment:
        return None
    return LiveCredential(first.id, principal, first.last_used_at)


def is_stale(credential: LiveCredential) -> bool:
    """Its last use is older than TOUCH_INTERVAL: time to record it again."""
    last = credential.last_used_at
    return last is None or aware(last) < now() - TOUCH_INTERVAL


def touch_token(session: Session, token_id: int) -> None:
    session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now()))


def open_session(
    session: Session,
    user: User,
    *,
    lifetime: timedelta,
    method: str = "session",
    client: str = "",
    user_agent: str = "",
) -> str:
    """Start a browser session for `user`; the cookie value."""
    secret = secrets.token_urlsafe(32)
    moment = now()
    session.add(
        WebSession(
            token_hash=digest(secret),
            user_id=user.id,
            method=method,
            client=client[:64],
            user_agent=user_agent[:255],
            created_at=moment,
            last_seen_at=moment,
            expires_at=moment + lifetime,
        )
    )
    user.last_login_at = moment
    session.flush()
    return secret


def find_session(
    conn: Connection, secret: str, *, idle_timeout: timedelta
) -> LiveCredential | None:
    """The live session for this cookie value (not expired, not idle too long, user enabled).

    One read, no write: ``is_stale`` and ``touch_session`` record activity; ended
    sessions are purged at the next login.
    """
    found = _holder(conn, _statement("session"), digest(secret))
    if found is None:
        return None
    first, principal = found
    moment = now()
    last_seen = aware(first.last_used_at)
    if aware(first.expires_at) <= moment or last_seen + idle_timeout <= moment:
        return None
    return LiveCredential(first.id, principal, first.last_used_at)


@cache
def _statement(kind: str) -> Select[Any]:
    """Token or session with this digest (bind ``digest``), its user and the user's grants."""
    u, g, f = User.__table__, UserFacility.__table__, Facility.__table__
    if kind == "token":
        t = ApiToken.__table__
        columns = [t.c.expires_at, t.c.last_used_at, t.c.revoked_at, literal("token")]
    else:
        t = WebSession.__table__
        columns = [t.c.expires_at, t.c.last_seen_at, literal(None), t.c.method]
    names = ("expires_at", "last_used_at", "revoked_at", "method")
    return (
        select(
            t.c.id,
            *(column.label(name) for column, name in zip(columns, names, strict=True)),
            u.c.username,
            u.c.role,
            u.c.enabled,
            g.c.facility_id,
            f.c.enabled.label("facility_enabled"),
        )
        .select_from(
            t.join(u, u.c.id == t.c.user_id)
            .outerjoin(g, g.c.user_id == u.c.id)
            .outerjoin(f, f.c.id == g.c.facility_id)
        )
        .where(t.c.token_hash == bindparam("digest"))
    )


def _holder(
    conn: Connection, statement: Select[Any], secret_digest: str
) -> tuple[Row[Any], Principal] | None:
    """The credential row and the principal of its (enabled) user: administrators see every
    facility, others the enabled facilities granted to them."""
    rows = conn.execute(statement, {"digest": secret_digest}).all()
    if not rows or not rows[0].enabled:
        return None
    first = rows[0]
    role = Role(first.role)
    facility_ids = None
    if role is not Role.ADMIN:
        facility_ids = frozenset(r.facility_id for r in rows if r.facility_enabled)
    return first, Principal(first.username, role, facility_ids, method=first.method)


def touch_session(session: Session, session_id: int) -> None:
    session.execute(
        update(WebSession).where(WebSession.id == session_id).values(last_seen_at=now())
    )


def close_session(session: Session, secret: str) -> None:
    session.execute(delete(WebSession).where(WebSession.token_hash == digest(secret)))


def purge_expired_sessions(session: Session) -> int:
    result = session.execute(delete(WebSession).where(WebSession.expires_at <= now()))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
