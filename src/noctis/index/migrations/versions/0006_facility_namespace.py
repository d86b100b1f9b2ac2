"""facility.namespace: the Kubernetes namespace whose Facility resource owns the entry

A facility name is one registry entry, one key prefix of the facility's objects and one task
queue, whatever the namespace of the Facility resource that declares it; the operator records
the owner's namespace here and refuses a Facility of the same name in another namespace while
the owner exists. NULL (entries written before, or by `noctis facility apply`): the first
Facility to reconcile claims it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("facility") as batch:
        batch.add_column(sa.Column("namespace", sa.String(length=63), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("facility") as batch:
        batch.drop_column("namespace")
