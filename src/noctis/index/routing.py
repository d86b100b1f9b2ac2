"""Index tables of routing: the routes, and one transfer per instance x destination.

A transfer is the durable record of one forward: ``pending`` until a worker claims it
(``sending``, with a lease in ``claimed_until``), then ``sent``, or ``failed`` (to be tried
again at ``next_attempt_at``), or ``dead`` after the route's last attempt (until an
administrator retries it). ``attempts`` counts every claim, so an instance sent again after a
worker died mid-forward is counted, never silent.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    delete,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from noctis.index.models import Base, utcnow

BigIntegerKey = BigInteger().with_variant(Integer(), "sqlite")  # SQLite: rowid alias


class TransferState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    DEAD = "dead"


class RouteRow(Base):
    __tablename__ = "route"
    __table_args__ = (UniqueConstraint("facility_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(253))
    # The Kubernetes namespace of the Route resource (NULL: `noctis route apply`).
    namespace: Mapped[str | None] = mapped_column(String(63))
    trigger: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    destinations: Mapped[list[str]] = mapped_column(default=list)
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    retry_attempts: Mapped[int] = mapped_column(Integer)
    retry_initial_seconds: Mapped[float] = mapped_column(Float)
    retry_max_seconds: Mapped[float] = mapped_column(Float)
    # trigger "instance": instances with a larger id have not been looked at yet.
    scanned_to: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Transfer(Base):
    __tablename__ = "route_transfer"
    __table_args__ = (
        UniqueConstraint("route_id", "destination", "sop_instance_uid"),
        Index("ix_route_transfer_due", "destination", "state", "next_attempt_at"),
        # What the periodic job and the progress counts read: the few transfers not sent yet,
        # without walking the many sent ones.
        Index("ix_route_transfer_open", "state", "next_attempt_at"),
        Index("ix_route_transfer_route_state", "route_id", "state"),
        # A deleted study's transfers are forgotten with it (index.deletion).
        Index("ix_route_transfer_study", "facility_id", "study_instance_uid"),
    )

    id: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True)
    route_id: Mapped[int] = mapped_column(ForeignKey("route.id", ondelete="CASCADE"))
    facility_id: Mapped[int] = mapped_column(Integer)
    destination: Mapped[str] = mapped_column(String(16))
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(8), default=TransferState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claim: Mapped[str | None] = mapped_column(String(36))
    last_error: Mapped[str] = mapped_column(String(1024), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RouteSent(Base):
    """How many transfers of a route reached a destination: counted as they are recorded,
    so progress is read without counting the sent rows (one per instance, ever growing)."""

    __tablename__ = "route_sent"

    route_id: Mapped[int] = mapped_column(
        ForeignKey("route.id", ondelete="CASCADE"), primary_key=True
    )
    destination: Mapped[str] = mapped_column(String(16), primary_key=True)
    sent: Mapped[int] = mapped_column(BigInteger, default=0)


def forget_transfers(
    session: Session, facility_id: int, study: str, series: str | None, sop: str | None
) -> int:
    """Remove the transfers of deleted instances (in the deletion's transaction): pending ones
    would fail on a missing object, and a sent one would stop the same SOP Instance UID, stored
    again later, from being routed again. The sent counts (``RouteSent``) stay."""
    query = delete(Transfer).where(
        Transfer.facility_id == facility_id, Transfer.study_instance_uid == study
    )
    if series is not None:
        query = query.where(Transfer.series_instance_uid == series)
    if sop is not None:
        query = query.where(Transfer.sop_instance_uid == sop)
    return int(session.execute(query).rowcount or 0)
