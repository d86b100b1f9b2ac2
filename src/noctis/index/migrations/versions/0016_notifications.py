"""notifications: in-app lists, preferences, facilities' receivers and deliveries

``user_notification``: an event in a user's in-app list (read or not).
``notification_preference``: what a user wants to hear (kinds) and how (in-app, e-mail).
``facility_notification_settings``: a facility's webhooks and e-mail recipients set through
REST (a Facility resource's ``notifications`` wins over them); webhook secrets apart.
``notification_delivery``: one event to one webhook or e-mail address, retried under a lease.

Revision ID: 0016
Revises: 0017
Create Date: 2026-12-07 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.id"],
        name=op.f(f"fk_{table}_{column}_{target}"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "user_notification",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        _fk("user_notification", "user_id", "app_user"),
        _fk("user_notification", "event_id", "notification_event"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_notification")),
        sa.UniqueConstraint("user_id", "event_id", name=op.f("uq_user_notification_user_id")),
    )
    op.create_index("ix_user_notification_inbox", "user_notification", ["user_id", "read_at", "id"])
    op.create_index(op.f("ix_user_notification_event_id"), "user_notification", ["event_id"])
    op.create_table(
        "notification_preference",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kinds", sa.JSON(), nullable=True),
        sa.Column("in_app", sa.Boolean(), nullable=False),
        sa.Column("email", sa.Boolean(), nullable=False),
        sa.Column("email_address", sa.String(length=254), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _fk("notification_preference", "user_id", "app_user"),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_notification_preference")),
    )
    op.create_table(
        "facility_notification_settings",
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("secrets", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _fk("facility_notification_settings", "facility_id", "facility"),
        sa.PrimaryKeyConstraint("facility_id", name=op.f("pk_facility_notification_settings")),
    )
    op.create_table(
        "notification_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("target", sa.String(length=254), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claim", sa.String(length=36), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        _fk("notification_delivery", "event_id", "notification_event"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_delivery")),
        sa.UniqueConstraint(
            "event_id",
            "channel",
            "target",
            name=op.f("uq_notification_delivery_event_id"),
        ),
    )
    op.create_index(
        "ix_notification_delivery_due", "notification_delivery", ["state", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_table("notification_delivery")
    op.drop_table("facility_notification_settings")
    op.drop_table("notification_preference")
    op.drop_table("user_notification")
