"""The reading workflow's tables every part of it shares: each study's workflow row (state,
priority, assignment) and the notification events the workflow raises.

Parts of the workflow with tables of their own (notes, reports, orders, deliveries, analysis
results) declare them in modules of their own beside this one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from noctis.index.models import Base, utcnow


class StudyWorkflow(Base):
    """Where one study is in the reading workflow (one row per study, made when it arrives).

    ``priority`` is a rank (`noctis.core.workflow.Priority`: higher is more urgent) so the
    worklist's order, priority then arrival, is one index scan."""

    __tablename__ = "study_workflow"
    __table_args__ = (
        Index("ix_study_workflow_queue", "facility_id", "priority", "arrived_at"),
        Index("ix_study_workflow_assignee", "assignee"),
    )

    study_pk: Mapped[int] = mapped_column(
        ForeignKey("study.id", ondelete="CASCADE"), primary_key=True
    )
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(SmallInteger, default=0)
    priority_reason: Mapped[str] = mapped_column(String(255), default="")
    critical: Mapped[bool] = mapped_column(Boolean, default=False)
    # The principal's subject (user name or OIDC subject) of the radiologist reading it.
    assignee: Mapped[str | None] = mapped_column(String(255))
    arrived_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    state_changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class NotificationEvent(Base):
    """Something people may need to hear about (a STAT study arrived, a report was finalised
    or amended, a critical result was flagged), written in the transaction of the change that
    raised it: an outbox that the notification fan-out reads (inboxes, webhooks, e-mail)."""

    __tablename__ = "notification_event"
    __table_args__ = (Index("ix_notification_event_pending", "fanned_out_at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    study_instance_uid: Mapped[str | None] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(255))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    actor: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    fanned_out_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
