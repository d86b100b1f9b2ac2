"""Orders (scheduled procedures) and the procedure steps modalities report on them (MPPS).

An order is what the Modality Worklist answers with: one requested procedure with one
scheduled procedure step, for one facility. Its Study Instance UID is assigned when it is
made, so the images the modality sends carry it. ``study_pk`` links the study once one arrived
(by that UID or the accession number, `noctis.core.orders.link_arrivals`).

A performed procedure step is one MPPS SOP Instance a modality created (N-CREATE) and
updated (N-SET), with the order it names, if the archive knows it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, SmallInteger, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from noctis.index.models import Base, utcnow


class Order(Base):
    __tablename__ = "imaging_order"
    __table_args__ = (
        UniqueConstraint("facility_id", "accession_number"),
        # The worklist's query: a facility's scheduled steps by date (and station, modality).
        Index("ix_imaging_order_worklist", "facility_id", "status", "scheduled_date"),
        Index("ix_imaging_order_study_uid", "study_instance_uid"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id", ondelete="CASCADE"))
    accession_number: Mapped[str] = mapped_column(String(16))
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    requested_procedure_id: Mapped[str] = mapped_column(String(16))
    requested_procedure_description: Mapped[str] = mapped_column(String(64), default="")
    # Requested Procedure Code Sequence's one item, when given (value, scheme, meaning).
    procedure_code_value: Mapped[str] = mapped_column(String(16), default="")
    procedure_code_scheme: Mapped[str] = mapped_column(String(16), default="")
    procedure_code_meaning: Mapped[str] = mapped_column(String(64), default="")
    scheduled_procedure_step_id: Mapped[str] = mapped_column(String(16))
    modality: Mapped[str] = mapped_column(String(16))
    scheduled_station_ae_title: Mapped[str] = mapped_column(String(16), default="")
    # DICOM strings (YYYYMMDD, HHMMSS) so range matching is string comparison, as the index.
    scheduled_date: Mapped[str] = mapped_column(String(8))
    scheduled_time: Mapped[str] = mapped_column(String(6), default="")
    priority: Mapped[int] = mapped_column(SmallInteger, default=0)  # core.workflow.Priority
    referring_physician_name: Mapped[str] = mapped_column(String(324), default="")
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    # scheduled, in-progress, completed, discontinued, cancelled (core.orders.OrderStatus)
    status: Mapped[str] = mapped_column(String(16))
    study_pk: Mapped[int | None] = mapped_column(
        ForeignKey("study.id", ondelete="SET NULL"), index=True
    )
    created_by: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PerformedProcedureStep(Base):
    """One MPPS SOP Instance: IN PROGRESS, then COMPLETED or DISCONTINUED (final)."""

    __tablename__ = "performed_procedure_step"
    __table_args__ = (UniqueConstraint("facility_id", "sop_instance_uid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id", ondelete="CASCADE"))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[int | None] = mapped_column(
        ForeignKey("imaging_order.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[str] = mapped_column(String(16))  # IN PROGRESS, COMPLETED, DISCONTINUED
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    # What the modality said, as DICOM JSON-like keyword -> text (kept for the record).
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
