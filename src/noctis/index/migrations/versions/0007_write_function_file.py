"""PostgreSQL: noctis_write_instance loaded from its own file (noctis/index/sql/write_instance.sql)

The function is the one revision 0004 created, unchanged: it now lives in a .sql file shipped
with the package, where it can be read, diffed and linted as SQL, and this revision replaces it
from that file (CREATE OR REPLACE: same signature and result type). A later change to the
function edits the file and adds a revision that loads it again. Nothing to do on SQLite,
where `noctis.index.sqlite_write` does the same in Python.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 18:30:00
"""

from __future__ import annotations

import importlib.util
from importlib.resources import files
from pathlib import Path

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def write_instance_function() -> str:
    return files("noctis.index").joinpath("sql/write_instance.sql").read_text(encoding="utf-8")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(write_instance_function())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        created = _revision_0004().WRITE_INSTANCE
        op.execute(created.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))


def _revision_0004():  # type: ignore[no-untyped-def]
    path = Path(__file__).with_name("0004_patient_identity.py")
    spec = importlib.util.spec_from_file_location("noctis_migration_0004", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
