"""API tokens and browser sessions: random secrets of which the index keeps only digests."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from noctis.index.accounts import ApiToken, User, WebSession

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


def find_token(session: Session, secret: str, *, touch: bool = True) -> ApiToken | None:
    """The live token with this secret (not revoked, not expired, its user enabled).

    With ``touch`` its last use is recorded (at most every TOUCH_INTERVAL); without, the
    lookup only reads, and the caller calls ``touch_token`` when ``token_is_stale``.
    """
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest(secret)))
    moment = now()
    if token is None or token.revoked_at is not None or not token.user.enabled:
        return None
    if token.expires_at is not None and aware(token.expires_at) <= moment:
        return None
    if touch and token_is_stale(token):
        touch_token(session, token.id)
    return token


def token_is_stale(token: ApiToken) -> bool:
    return token.last_used_at is None or aware(token.last_used_at) < now() - TOUCH_INTERVAL


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
    session: Session, secret: str, *, idle_timeout: timedelta, touch: bool = True
) -> WebSession | None:
    """The live session for this cookie value (not expired, not idle too long, user enabled).

    With ``touch`` an ended session is deleted and a live one's last activity recorded (at
    most every TOUCH_INTERVAL); without, the lookup only reads (``session_is_stale`` and
    ``touch_session`` do the rest; ended sessions are purged at the next login).
    """
    row = session.scalar(select(WebSession).where(WebSession.token_hash == digest(secret)))
    if row is None or not row.user.enabled:
        return None
    moment = now()
    last_seen = aware(row.last_seen_at)
    if aware(row.expires_at) <= moment or last_seen + idle_timeout <= moment:
        if touch:
            session.delete(row)
        return None
    if touch and session_is_stale(row):
        touch_session(session, row.id)
    return row


def session_is_stale(row: WebSession) -> bool:
    return aware(row.last_seen_at) < now() - TOUCH_INTERVAL


def touch_session(session: Session, session_id: int) -> None:
    session.execute(
        update(WebSession).where(WebSession.id == session_id).values(last_seen_at=now())
    )


def close_session(session: Session, secret: str) -> None:
    session.execute(delete(WebSession).where(WebSession.token_hash == digest(secret)))


def purge_expired_sessions(session: Session) -> int:
    result = session.execute(delete(WebSession).where(WebSession.expires_at <= now()))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
