"""routing: routes, one transfer per instance x destination, sent counts per destination

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 21:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_BIGINT_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "route",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("namespace", sa.String(length=63), nullable=True),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("destinations", sa.JSON(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("retry_attempts", sa.Integer(), nullable=False),
        sa.Column("retry_initial_seconds", sa.Float(), nullable=False),
        sa.Column("retry_max_seconds", sa.Float(), nullable=False),
        sa.Column("scanned_to", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facility.id"],
            name=op.f("fk_route_facility_id_facility"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_route")),
        sa.UniqueConstraint("facility_id", "name", name=op.f("uq_route_facility_id")),
    )
    op.create_table(
        "route_transfer",
        sa.Column("id", _BIGINT_KEY, nullable=False),
        sa.Column("route_id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("destination", sa.String(length=16), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim", sa.String(length=36), nullable=True),
        sa.Column("last_error", sa.String(length=1024), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["route_id"],
            ["route.id"],
            name=op.f("fk_route_transfer_route_id_route"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_route_transfer")),
        sa.UniqueConstraint(
            "route_id",
            "destination",
            "sop_instance_uid",
            name=op.f("uq_route_transfer_route_id"),
        ),
    )
    op.create_index(
        "ix_route_transfer_due", "route_transfer", ["destination", "state", "next_attempt_at"]
    )
    op.create_index("ix_route_transfer_open", "route_transfer", ["state", "next_attempt_at"])
    op.create_index("ix_route_transfer_route_state", "route_transfer", ["route_id", "state"])
    op.create_index(
        "ix_route_transfer_study", "route_transfer", ["facility_id", "study_instance_uid"]
    )
    op.create_table(
        "route_sent",
        sa.Column("route_id", sa.Integer(), nullable=False),
        sa.Column("destination", sa.String(length=16), nullable=False),
        sa.Column("sent", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["route_id"],
            ["route.id"],
            name=op.f("fk_route_sent_route_id_route"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("route_id", "destination", name=op.f("pk_route_sent")),
    )


def downgrade() -> None:
    op.drop_table("route_sent")
    op.drop_index("ix_route_transfer_study", table_name="route_transfer")
    op.drop_index("ix_route_transfer_open", table_name="route_transfer")
    op.drop_index("ix_route_transfer_route_state", table_name="route_transfer")
    op.drop_index("ix_route_transfer_due", table_name="route_transfer")
    op.drop_table("route_transfer")
    op.drop_table("route")
