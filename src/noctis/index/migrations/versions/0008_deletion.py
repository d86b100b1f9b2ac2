"""deletion: tombstones (object keys a sweep removes), legal holds, consistency findings, and
job leases (one owner of a whole-archive job across replicas)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tombstone",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("object_key", sa.String(length=512), nullable=False),
        sa.Column("prefix", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(length=32), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tombstone")),
    )
    op.create_index(
        op.f("ix_tombstone_claimed_until"), "tombstone", ["claimed_until"], unique=False
    )
    op.create_table(
        "legal_hold",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=1024), nullable=False),
        sa.Column("placed_by", sa.String(length=255), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_legal_hold")),
        sa.UniqueConstraint(
            "facility_id", "study_instance_uid", name=op.f("uq_legal_hold_facility_id")
        ),
    )
    op.create_table(
        "consistency_finding",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("object_key", sa.String(length=512), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("found_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consistency_finding")),
        sa.UniqueConstraint("kind", "object_key", name=op.f("uq_consistency_finding_kind")),
    )
    lease = op.create_table(
        "job_lease",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=32), nullable=True),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_job_lease")),
    )
    op.bulk_insert(
        lease,
        [{"name": name, "holder": None, "until": None} for name in ("consistency", "retention")],
    )


def downgrade() -> None:
    op.drop_table("job_lease")
    op.drop_table("consistency_finding")
    op.drop_table("legal_hold")
    op.drop_index(op.f("ix_tombstone_claimed_until"), table_name="tombstone")
    op.drop_table("tombstone")
