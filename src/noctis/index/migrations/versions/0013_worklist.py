"""worklist: notes on studies, and the indexes that order the worklist

``study_note``: free-text notes on a study (author, text, when), in the study's facility.
``ix_study_workflow_open``: the worklist's order (priority first, then arrival, then the
study's key) over the studies still to be read (a partial index: at 100,000 studies most are
read already, and a scan in that order stops at the page's end). ``ix_study_workflow_order``:
the same order over every study (a worklist filtered on other states).

Revision ID: 0013
Revises: 0017
Create Date: 2026-12-07 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

OPEN = sa.text("state IN ('arrived', 'ready', 'in-reading', 'preliminary')")


def upgrade() -> None:
    op.create_table(
        "study_note",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("author", sa.String(length=255), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["study.id"],
            name=op.f("fk_study_note_study_pk_study"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facility.id"],
            name=op.f("fk_study_note_facility_id_facility"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_study_note")),
    )
    op.create_index("ix_study_note_study", "study_note", ["study_pk", "id"])
    order = [sa.text("priority DESC"), "arrived_at", "study_pk"]
    op.create_index(
        "ix_study_workflow_open",
        "study_workflow",
        order,
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )
    op.create_index("ix_study_workflow_order", "study_workflow", order)


def downgrade() -> None:
    op.drop_index("ix_study_workflow_order", table_name="study_workflow")
    op.drop_index("ix_study_workflow_open", table_name="study_workflow")
    op.drop_table("study_note")
