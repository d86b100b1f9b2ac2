"""reading workflow: each study's workflow row and the notification outbox

``study_workflow``: one row per study (state, priority rank, critical flag, assignee, when it
arrived), indexed for the worklist's order (facility, priority, arrival).
``notification_event``: events raised in the transaction of the change that raised them, fanned
out later to inboxes, webhooks and e-mail (noctis.core.notifications).

The studies already stored get a row in state ``ready`` (they are stable: 0010 declared them),
so an upgraded archive's worklist shows its past, unassigned and routine.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 00:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "study_workflow",
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("priority_reason", sa.String(length=255), nullable=False),
        sa.Column("critical", sa.Boolean(), nullable=False),
        sa.Column("assignee", sa.String(length=255), nullable=True),
        sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["study.id"],
            name=op.f("fk_study_workflow_study_pk_study"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facility.id"],
            name=op.f("fk_study_workflow_facility_id_facility"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("study_pk", name=op.f("pk_study_workflow")),
    )
    op.create_index(
        "ix_study_workflow_queue", "study_workflow", ["facility_id", "priority", "arrived_at"]
    )
    op.create_index("ix_study_workflow_assignee", "study_workflow", ["assignee"])
    op.create_table(
        "notification_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fanned_out_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facility.id"],
            name=op.f("fk_notification_event_facility_id_facility"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_event")),
    )
    op.create_index("ix_notification_event_pending", "notification_event", ["fanned_out_at", "id"])
    op.execute(
        "INSERT INTO study_workflow (study_pk, facility_id, state, priority, priority_reason,"
        " critical, assignee, arrived_at, state_changed_at, updated_at)"
        " SELECT id, facility_id, 'ready', 0, '', false, NULL, created_at, updated_at,"
        " updated_at FROM study"
    )


def downgrade() -> None:
    op.drop_table("notification_event")
    op.drop_table("study_workflow")
