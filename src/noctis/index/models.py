"""The index: facilities and their application entities, and the DICOM information model.

Every patient, study, series and instance row belongs to one facility: the same Study
Instance UID sent by two facilities is two studies, each visible only to its own facility.
Attributes used for matching are columns; dates and times are stored as DICOM strings
(``YYYYMMDD``, ``HHMMSS.ffffff``), so range matching is string comparison.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}


class Facility(Base):
    __tablename__ = "facility"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    # The Kubernetes namespace of the Facility resource this entry belongs to (the operator
    # writes it); NULL for an entry `noctis facility apply` wrote. A name is one facility
    # whatever the namespace: it keys the facility's objects and its task queue.
    namespace: Mapped[str | None] = mapped_column(String(63))
    display_name: Mapped[str] = mapped_column(String(255), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    storage_pool: Mapped[str | None] = mapped_column(String(253))
    quota_bytes: Mapped[int | None] = mapped_column(BigInteger)
    quota_studies: Mapped[int | None] = mapped_column(Integer)
    idp_groups: Mapped[list[str]] = mapped_column(default=list)
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    last_association_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    application_entities: Mapped[list[ApplicationEntity]] = relationship(
        back_populates="facility", cascade="all, delete-orphan", order_by="ApplicationEntity.id"
    )


class ApplicationEntity(Base):
    """A modality or peer of a facility: who may call us, from where, for what; where to send."""

    __tablename__ = "application_entity"

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id", ondelete="CASCADE"))
    # "*" matches any calling AE title (the embedded default facility uses it).
    ae_title: Mapped[str] = mapped_column(String(16), unique=True)
    host: Mapped[str | None] = mapped_column(String(255))
    port: Mapped[int | None] = mapped_column(Integer)
    allowed_cidrs: Mapped[list[str]] = mapped_column(default=list)
    services: Mapped[list[str]] = mapped_column(default=list)
    description: Mapped[str] = mapped_column(String(255), default="")

    facility: Mapped[Facility] = relationship(back_populates="application_entities")


# A patient with a PatientID is one row per (facility, PatientID, IssuerOfPatientID); rows with
# an empty PatientID are exempt, so that each such study gets a patient of its own.
_HAS_PATIENT_ID = text("patient_id <> ''")


class Patient(Base):
    """A patient of a facility, with the demographics of the first study that named them.

    Each study keeps the patient attributes it arrived with (`Study.patient_name` ...): a later
    study with other demographics never changes these or another study's (the difference is
    recorded for reconciliation instead, see `noctis.core.ingest`).
    """

    __tablename__ = "patient"
    __table_args__ = (
        Index(
            "uq_patient_identity",
            "facility_id",
            "patient_id",
            "issuer_of_patient_id",
            unique=True,
            sqlite_where=_HAS_PATIENT_ID,
            postgresql_where=_HAS_PATIENT_ID,
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(324), default="", index=True)
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")


class Study(Base):
    __tablename__ = "study"
    __table_args__ = (
        UniqueConstraint("facility_id", "study_instance_uid"),
        Index("ix_study_facility_date", "facility_id", "study_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"))
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    # The patient attributes this study arrived with: what its answers (QIDO, C-FIND) carry
    # and match on, whatever another study of the same patient says.
    patient_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="")
    # Indexed for case-insensitive prefix searches (QIDO PatientName=A*) by migration 0004:
    # lower(patient_name) on PostgreSQL, patient_name COLLATE NOCASE on SQLite.
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_time: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    study_id: Mapped[str] = mapped_column(String(16), default="")
    study_description: Mapped[str] = mapped_column(String(255), default="")
    referring_physician_name: Mapped[str] = mapped_column(String(324), default="")
    modalities_in_study: Mapped[str] = mapped_column(String(255), default="")
    number_of_series: Mapped[int] = mapped_column(Integer, default=0)
    number_of_instances: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    patient: Mapped[Patient] = relationship()


class Series(Base):
    __tablename__ = "series"
    __table_args__ = (UniqueConstraint("facility_id", "series_instance_uid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"))
    study_pk: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_description: Mapped[str] = mapped_column(String(255), default="")
    body_part_examined: Mapped[str] = mapped_column(String(64), default="")
    series_date: Mapped[str] = mapped_column(String(8), default="")
    series_time: Mapped[str] = mapped_column(String(16), default="")
    number_of_instances: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    study: Mapped[Study] = relationship()


class Instance(Base):
    __tablename__ = "instance"
    __table_args__ = (UniqueConstraint("facility_id", "sop_instance_uid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"))
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    number_of_frames: Mapped[int | None] = mapped_column(Integer)
    # Byte offset of the (7FE0,0010) Pixel Data element in the stored object, when present.
    pixel_data_offset: Mapped[int | None] = mapped_column(BigInteger)
    object_key: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    series: Mapped[Series] = relationship()
