"""Migration 0015: the orders tables, and the registry's new services (worklist, mpps) given
to the entries that allowed every service before, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from noctis.index.migrate import alembic_config, upgrade

PREVIOUS = "0014"  # the revision 0015 follows


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_0015_adds_orders_and_lets_entries_that_allowed_everything_use_worklist_and_mpps(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from alembic import command

    url = (
        request.getfixturevalue("pg_url")
        if database == "postgres"
        else f"sqlite:///{tmp_path / 'index.sqlite3'}"
    )
    every_service_before = ["echo", "store", "find", "move", "get", "commitment"]
    upgrade(url, PREVIOUS)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO facility (id, name, display_name, enabled, spec, idp_groups, "
                    "created_at, updated_at) VALUES (1, 'default', '', true, '{}', '[]', "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            for entry, (title, services) in enumerate(
                [("*", every_service_before), ("CT1", ["echo", "store"])], start=1
            ):
                conn.execute(
                    text(
                        "INSERT INTO application_entity (id, facility_id, ae_title, "
                        "allowed_cidrs, services, description) VALUES (:id, 1, :title, '[]', "
                        ":services, '')"
                    ),
                    {"id": entry, "title": title, "services": json.dumps(services)},
                )

        def services() -> dict[str, list[str]]:
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT ae_title, services FROM application_entity"))
                return {
                    title: value if isinstance(value, list) else json.loads(value)
                    for title, value in rows
                }

        upgrade(url)
        assert services() == {
            "*": [*every_service_before, "worklist", "mpps"],
            "CT1": ["echo", "store"],
        }
        tables = {"imaging_order", "performed_procedure_step"}
        assert tables <= set(inspect(engine).get_table_names())
        command.downgrade(alembic_config(url), PREVIOUS)
        assert services() == {"*": every_service_before, "CT1": ["echo", "store"]}
        engine.dispose()
        assert not tables & set(inspect(create_engine(url)).get_table_names())
    finally:
        engine.dispose()
