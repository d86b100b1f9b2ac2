"""The index's account and audit tables: users, their facility grants, API tokens, web
sessions, and the audit trail.

Secrets never reach the database in the clear: passwords are argon2 hashes, API tokens and
session cookies are stored as SHA-256 digests of high-entropy random values (a digest is
enough there; argon2 would only slow every request down). Audit rows keep no foreign keys,
so removing a user or a facility never rewrites the history of who saw what.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from noctis.index.models import Base, Facility, utcnow

# SQLite auto-increments only an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
BigIntegerKey = BigInteger().with_variant(Integer(), "sqlite")


class User(Base):
    # "user" is a reserved word in PostgreSQL.
    __tablename__ = "app_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    display_name: Mapped[str] = mapped_column(String(255), default="")
    role: Mapped[str] = mapped_column(String(32))
    # None: cannot log in with a password (identity-provider users, disabled passwords).
    password_hash: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16), default="local")  # local | oidc
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    grants: Mapped[list[UserFacility]] = relationship(
        back_populates="user", cascade="all, delete-orphan", lazy="selectin"
    )


class UserFacility(Base):
    """A user may see (and, by role, change) the studies of this facility."""

    __tablename__ = "user_facility"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("app_user.id", ondelete="CASCADE"), primary_key=True
    )
    facility_id: Mapped[int] = mapped_column(
        ForeignKey("facility.id", ondelete="CASCADE"), primary_key=True, index=True
    )

    user: Mapped[User] = relationship(back_populates="grants")
    facility: Mapped[Facility] = relationship(lazy="joined")


class ApiToken(Base):
    """A machine credential acting as its user; only the digest is kept."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, to recognise it
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship(lazy="joined")


class WebSession(Base):
    """A browser login; the cookie holds a random value whose digest is stored here."""

    __tablename__ = "web_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id", ondelete="CASCADE"), index=True)
    method: Mapped[str] = mapped_column(String(16), default="session")  # session | oidc
    client: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    user: Mapped[User] = relationship(lazy="joined")


class AuditRow(Base):
    """One read or write of patient data (or a security event): who, from where, what."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_actor_at", "actor", "at"),
        Index("ix_audit_event_action_at", "action", "at"),
    )

    id: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(255))
    actor_type: Mapped[str] = mapped_column(String(8))  # user | token | ae
    client: Mapped[str] = mapped_column(String(255), default="")
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32))
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    facility_id: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class LoginLockout(Base):
    """Password attempts of one user name from one client address in the current window.

    Shared by every API process through the index, and counted with one atomic upsert
    (``IndexBackend.count_login_attempt``) before the password is checked
    (``noctis.api.auth.lockout``): parallel attempts can never all slip under the limit."""

    __tablename__ = "login_lockout"

    username: Mapped[str] = mapped_column(String(150), primary_key=True)
    client: Mapped[str] = mapped_column(String(64), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
