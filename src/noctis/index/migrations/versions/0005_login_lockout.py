"""login lockout: failed-login counts shared by every API process

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_lockout",
        sa.Column("username", sa.String(length=150), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("username", "client", name=op.f("pk_login_lockout")),
    )
    op.create_index(
        op.f("ix_login_lockout_window_start"), "login_lockout", ["window_start"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_login_lockout_window_start"), table_name="login_lockout")
    op.drop_table("login_lockout")
