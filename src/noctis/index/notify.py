"""Index tables of notifications, after the outbox (``notification_event``) that producers
write: each user's in-app notifications, each user's preferences, each facility's receivers
set through REST, and one delivery per webhook or e-mail recipient of an event.

A delivery is ``pending`` until a worker claims it (``sending``, leased until
``claimed_until``), then ``sent``, or ``failed`` (tried again at ``next_attempt_at``), or
``dead`` after the last attempt (until an administrator retries it), as routing's transfers.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from noctis.index.models import Base, utcnow


class DeliveryState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    DEAD = "dead"


class Channel(StrEnum):
    WEBHOOK = "webhook"
    EMAIL = "email"


class UserNotification(Base):
    """One event in one user's in-app list."""

    __tablename__ = "user_notification"
    __table_args__ = (
        UniqueConstraint("user_id", "event_id"),
        Index("ix_user_notification_inbox", "user_id", "read_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(
        ForeignKey("notification_event.id", ondelete="CASCADE"), index=True
    )
    # Copied from the event so the list reads one table (and isolation filters on it).
    facility_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class NotificationPreference(Base):
    """What one user wants to hear, and how. ``kinds`` None: the default of the user's role."""

    __tablename__ = "notification_preference"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("app_user.id", ondelete="CASCADE"), primary_key=True
    )
    kinds: Mapped[list[str] | None] = mapped_column()
    in_app: Mapped[bool] = mapped_column(Boolean, default=True)
    email: Mapped[bool] = mapped_column(Boolean, default=False)
    email_address: Mapped[str] = mapped_column(String(254), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FacilityNotificationSettings(Base):
    """A facility's webhooks and e-mail recipients set through REST (``noctis serve``
    without Kubernetes); a Facility resource's ``notifications`` wins over them.

    ``settings`` is the spec's shape (noctis.specs.notifications); webhook secrets are kept
    apart in ``secrets`` (webhook name -> secret) and never answered back."""

    __tablename__ = "facility_notification_settings"

    facility_id: Mapped[int] = mapped_column(
        ForeignKey("facility.id", ondelete="CASCADE"), primary_key=True
    )
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    secrets: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class NotificationDelivery(Base):
    """One event to one webhook or one e-mail address."""

    __tablename__ = "notification_delivery"
    __table_args__ = (
        UniqueConstraint("event_id", "channel", "target"),
        Index("ix_notification_delivery_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("notification_event.id", ondelete="CASCADE"))
    facility_id: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(8))
    # The webhook's name, or the e-mail address.
    target: Mapped[str] = mapped_column(String(254))
    # The user whose preference asked for it (None: a facility's recipient).
    user_id: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(8), default=DeliveryState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    claim: Mapped[str | None] = mapped_column(String(36))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
