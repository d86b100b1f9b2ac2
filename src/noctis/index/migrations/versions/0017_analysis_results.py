"""results of automated analysis: each study's SR and SEG instances, and the scan's watermark

``analysis_result``: one row per SR or SEG instance (its class, sender, summary, critical flag),
removed with its instance or study. ``analysis_result_scan``: the id of the last instance the
periodic scan looked at. An upgraded archive's scan starts after the instances already stored
(their results are not raised as new critical findings long after the fact).

Revision ID: 0017
Revises: 0012
Create Date: 2026-12-07 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "analysis_result",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("instance_pk", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("sender", sa.String(length=255), nullable=True),
        sa.Column("sender_type", sa.String(length=16), nullable=True),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("critical", sa.Boolean(), nullable=False),
        sa.Column("critical_reason", sa.String(length=255), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facility.id"],
            name=op.f("fk_analysis_result_facility_id_facility"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["study.id"],
            name=op.f("fk_analysis_result_study_pk_study"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["instance_pk"],
            ["instance.id"],
            name=op.f("fk_analysis_result_instance_pk_instance"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analysis_result")),
        sa.UniqueConstraint("instance_pk", name=op.f("uq_analysis_result_instance_pk")),
    )
    op.create_index("ix_analysis_result_study", "analysis_result", ["study_pk", "critical"])
    op.create_index("ix_analysis_result_sender", "analysis_result", ["sender", "recorded_at"])
    op.create_table(
        "analysis_result_scan",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scanned_to", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analysis_result_scan")),
    )
    op.execute(
        "INSERT INTO analysis_result_scan (id, scanned_to, updated_at)"
        " SELECT 1, COALESCE(MAX(id), 0), CURRENT_TIMESTAMP FROM instance"
    )


def downgrade() -> None:
    op.drop_table("analysis_result_scan")
    op.drop_table("analysis_result")
