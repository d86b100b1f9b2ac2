"""Results of automated analysis: the SR and SEG instances of each study, summarised, and how
far the scan that finds them has looked (``noctis.core.results``).

A result is one stored instance (an SR document or a segmentation) recorded against its study
with what a radiologist needs at a glance: its class, who sent it, a short summary, and
whether it declares a critical finding. The instance's row stays the source of truth: when the
instance or its study is deleted, its result goes with it (ON DELETE CASCADE).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from noctis.index.models import Base, utcnow


class AnalysisResult(Base):
    __tablename__ = "analysis_result"
    __table_args__ = (
        UniqueConstraint("instance_pk"),
        # result_summaries: count and critical per study, for a page of the worklist.
        Index("ix_analysis_result_study", "study_pk", "critical"),
        # the sender is looked up again for results recorded before their store was audited
        Index("ix_analysis_result_sender", "sender", "recorded_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id", ondelete="CASCADE"))
    study_pk: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"))
    instance_pk: Mapped[int] = mapped_column(ForeignKey("instance.id", ondelete="CASCADE"))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))  # "sr" or "seg"
    # Who sent it, as the audit trail names them (an AE title, a user): None until known.
    sender: Mapped[str | None] = mapped_column(String(255))
    sender_type: Mapped[str | None] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(255), default="")
    # {"findings": [...text or "meaning (SCHEME:VALUE)"...], "codes": [...], "note": "..."}
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    critical: Mapped[bool] = mapped_column(Boolean, default=False)
    critical_reason: Mapped[str] = mapped_column(String(255), default="")
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ResultScan(Base):
    """How far the results scan has looked: instances with a larger id are not seen yet.
    One row (id 1); moved forward by a conditional UPDATE so two workers never both take a
    batch."""

    __tablename__ = "analysis_result_scan"

    id: Mapped[int] = mapped_column(primary_key=True)
    scanned_to: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
