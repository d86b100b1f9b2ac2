"""Registry entries that allowed every DIMSE service also allow storage commitment

Storage commitment (N-ACTION) is a registry service since issue 14, and an AE title needs it to
ask for a commitment. Entries written before listed the five services there were, explicitly:
the embedded default entry ("*", loopback) and every entry a spec left at its default. Those
meant "every service"; they get the new one too. An entry that listed fewer keeps its list.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 22:00:00
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SERVICES_BEFORE = frozenset({"echo", "store", "find", "move", "get"})
COMMITMENT = "commitment"

application_entity = sa.table(
    "application_entity", sa.column("id", sa.Integer), sa.column("services", sa.JSON)
)


def upgrade() -> None:
    _rewrite(lambda services: [*services, COMMITMENT] if _allowed_all(services) else services)


def downgrade() -> None:
    _rewrite(lambda services: [service for service in services if service != COMMITMENT])


def _allowed_all(services: list[str]) -> bool:
    return set(services) >= SERVICES_BEFORE and COMMITMENT not in services


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
