"""orders: scheduled procedures (the Modality Worklist) and performed procedure steps (MPPS)

``imaging_order``: one requested procedure with its scheduled step per row (accession number
unique per facility, a Study Instance UID assigned at creation, the linked study once it
arrived). ``performed_procedure_step``: the MPPS instances modalities create and update.

The registry gains two services, ``worklist`` (MWL C-FIND) and ``mpps`` (N-CREATE/N-SET). As
0011 did for storage commitment: entries that allowed every service there was (the embedded
default entry, every entry a spec left at its default) get both; an entry that listed fewer
keeps its list.

Revision ID: 0015
Revises: 0017
Create Date: 2026-12-07 01:00:00
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

SERVICES_BEFORE = frozenset({"echo", "store", "find", "move", "get", "commitment"})
NEW_SERVICES = ("worklist", "mpps")

application_entity = sa.table(
    "application_entity", sa.column("id", sa.Integer), sa.column("services", sa.JSON)
)


def upgrade() -> None:
    op.create_table(
        "imaging_order",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("accession_number", sa.String(length=16), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("issuer_of_patient_id", sa.String(length=64), nullable=False),
        sa.Column("patient_name", sa.String(length=324), nullable=False),
        sa.Column("patient_birth_date", sa.String(length=8), nullable=False),
        sa.Column("patient_sex", sa.String(length=16), nullable=False),
        sa.Column("requested_procedure_id", sa.String(length=16), nullable=False),
        sa.Column("requested_procedure_description", sa.String(length=64), nullable=False),
        sa.Column("procedure_code_value", sa.String(length=16), nullable=False),
        sa.Column("procedure_code_scheme", sa.String(length=16), nullable=False),
        sa.Column("procedure_code_meaning", sa.String(length=64), nullable=False),
        sa.Column("scheduled_procedure_step_id", sa.String(length=16), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("scheduled_station_ae_title", sa.String(length=16), nullable=False),
        sa.Column("scheduled_date", sa.String(length=8), nullable=False),
        sa.Column("scheduled_time", sa.String(length=6), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("referring_physician_name", sa.String(length=324), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facility.id"],
            name=op.f("fk_imaging_order_facility_id_facility"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["study.id"],
            name=op.f("fk_imaging_order_study_pk_study"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imaging_order")),
        sa.UniqueConstraint(
            "facility_id", "accession_number", name=op.f("uq_imaging_order_facility_id")
        ),
    )
    op.create_index(
        "ix_imaging_order_worklist", "imaging_order", ["facility_id", "status", "scheduled_date"]
    )
    op.create_index("ix_imaging_order_study_uid", "imaging_order", ["study_instance_uid"])
    op.create_index(op.f("ix_imaging_order_study_pk"), "imaging_order", ["study_pk"])
    op.create_table(
        "performed_procedure_step",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("calling_ae_title", sa.String(length=16), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facility.id"],
            name=op.f("fk_performed_procedure_step_facility_id_facility"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["imaging_order.id"],
            name=op.f("fk_performed_procedure_step_order_id_imaging_order"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_performed_procedure_step")),
        sa.UniqueConstraint(
            "facility_id",
            "sop_instance_uid",
            name=op.f("uq_performed_procedure_step_facility_id"),
        ),
    )
    op.create_index(
        op.f("ix_performed_procedure_step_order_id"), "performed_procedure_step", ["order_id"]
    )
    _rewrite(lambda services: [*services, *NEW_SERVICES] if _allowed_all(services) else services)


def downgrade() -> None:
    _rewrite(lambda services: [s for s in services if s not in NEW_SERVICES])
    op.drop_table("performed_procedure_step")
    op.drop_table("imaging_order")


def _allowed_all(services: list[str]) -> bool:
    return set(services) >= SERVICES_BEFORE and not set(services) & set(NEW_SERVICES)


def _rewrite(change: Callable[[list[str]], list[str]]) -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.select(application_entity.c.id, application_entity.c.services))
    for entry_id, services in rows.all():
        changed = change(list(services or []))
        if changed != list(services or []):
            connection.execute(
                application_entity.update()
                .where(application_entity.c.id == entry_id)
                .values(services=changed)
            )
