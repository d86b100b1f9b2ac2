"""study_stable: the version of each study declared stable (study-stable detection)

One row per study: the study's updated_at when it was last declared stable, when, how many
times, and when the STUDY_STABLE task finished. Nothing changes in the write path: the
detection sweep compares study.updated_at with this row (see noctis.index.stable).

The studies already stored are recorded as stable and done at their current version: an
upgrade must not send the whole archive's past to routing. A study that receives another
instance afterwards becomes stable again as usual.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 21:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "study_stable",
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stable_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("times", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["study.id"],
            name=op.f("fk_study_stable_study_pk_study"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facility.id"],
            name=op.f("fk_study_stable_facility_id_facility"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("study_pk", name=op.f("pk_study_stable")),
    )
    op.execute(
        "INSERT INTO study_stable (study_pk, facility_id, version, stable_at, claimed_at,"
        " done_at, times)"
        " SELECT id, facility_id, updated_at, updated_at, updated_at, updated_at, 1 FROM study"
    )


def downgrade() -> None:
    op.drop_table("study_stable")
