"""The reports' tables: templates and snippets to write from, each study's report with its
draft, every signed version (immutable), and the documents attached to a study.

A signed version is never updated except to record that its documents (the Encapsulated PDF
and the Basic Text SR, whose UIDs it names from the start) are stored in the study.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
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


class ReportTemplate(Base):
    """Text to start a report from, for a modality and/or body part ("" matches any); of one
    facility, or global (``facility_id`` None)."""

    __tablename__ = "report_template"
    __table_args__ = (Index("ix_report_template_facility", "facility_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int | None] = mapped_column(ForeignKey("facility.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    modality: Mapped[str] = mapped_column(String(16), default="")
    body_part: Mapped[str] = mapped_column(String(64), default="")
    text: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReportSnippet(Base):
    """Reusable text inserted while writing; of one facility, or global."""

    __tablename__ = "report_snippet"
    __table_args__ = (Index("ix_report_snippet_facility", "facility_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int | None] = mapped_column(ForeignKey("facility.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Report(Base):
    """The report of one study: its state (draft until first signed, then the state of its
    latest signed version), the draft being written (None: none open) and the series its
    documents go to."""

    __tablename__ = "report"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"), unique=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default="draft")
    draft_text: Mapped[str | None] = mapped_column(Text)
    draft_author: Mapped[str | None] = mapped_column(String(255))
    draft_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    template_id: Mapped[int | None] = mapped_column(
        ForeignKey("report_template.id", ondelete="SET NULL")
    )
    pdf_series_uid: Mapped[str] = mapped_column(String(64))
    sr_series_uid: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReportVersion(Base):
    """One signed version, readable forever: its text, who wrote and signed it and when, the
    SHA-256 of the signed text, and the SOP Instance UIDs of its PDF and SR in the study."""

    __tablename__ = "report_version"
    __table_args__ = (
        UniqueConstraint("report_id", "number", name="uq_report_version_number"),
        Index("ix_report_version_pending", "documents_stored_at"),
        # The results scan skips the archive's own report SRs (noctis.core.results).
        Index("ix_report_version_sr", "sr_sop_instance_uid"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("report.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # preliminary | final | amended
    text: Mapped[str] = mapped_column(Text)
    text_sha256: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(255))
    signed_by: Mapped[str] = mapped_column(String(255))
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    pdf_sop_instance_uid: Mapped[str] = mapped_column(String(64))
    sr_sop_instance_uid: Mapped[str] = mapped_column(String(64))
    # What the documents show of the study and facility, as they were at signing (a series
    # added later must not change a version's PDF when it is rendered again).
    header: Mapped[dict[str, Any]] = mapped_column(default=dict)
    pdf_sha256: Mapped[str | None] = mapped_column(String(64))
    documents_stored_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StudyAttachment(Base):
    """A document attached to a study (a scanned requisition), stored in it as an
    Encapsulated PDF instance."""

    __tablename__ = "study_attachment"
    __table_args__ = (Index("ix_study_attachment_study", "study_pk"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("study.id", ondelete="CASCADE"))
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(255))
    filename: Mapped[str] = mapped_column(String(255), default="")
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    uploaded_by: Mapped[str] = mapped_column(String(255))
    uploaded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
