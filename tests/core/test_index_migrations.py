"""The PostgreSQL write function kept in its .sql file: shipped with the package, loaded by
migration 0007, and an index at 0006 upgrades to it (and back) without losing a write."""

from __future__ import annotations

import fnmatch
import json
import tomllib
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path

import pytest
from sqlalchemy import text

from noctis.dicom.header import InstanceHeader
from noctis.index.backend import IndexBackend, InstanceRecord, SameContent
from noctis.index.db import open_index
from noctis.index.migrate import alembic_config, current_revision, upgrade
from noctis.index.models import Facility

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "noctis"


def test_every_data_file_of_the_package_ships_in_the_wheel() -> None:
    """Files that are not Python modules reach the wheel (and the images, which pip-install
    it) only through pyproject's package-data: the .sql file the migration loads among them."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["noctis"]
    data_files = [
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"}
    ]
    assert "index/sql/write_instance.sql" in data_files
    unshipped = [f for f in data_files if not any(fnmatch.fnmatch(f, p) for p in patterns)]
    assert unshipped == []


def _function_body(url: str) -> str:
    index = open_index(url)
    try:
        with index.engine.connect() as conn:
            return str(
                conn.execute(
                    text("SELECT prosrc FROM pg_proc WHERE proname = 'noctis_write_instance'")
                ).scalar_one()
            )
    finally:
        index.close()


def _file_body() -> str:
    source = files("noctis.index").joinpath("sql/write_instance.sql").read_text()
    return source.split("$$")[1]


def _write(url: str, n: int) -> None:
    """Index instance ``n`` of one series through the function, and once more (refused)."""
    index: IndexBackend = open_index(url)
    try:
        with index.sessions.begin() as session:
            facility = session.query(Facility).filter_by(name="north").one_or_none()
            if facility is None:
                facility = Facility(name="north")
                session.add(facility)
                session.flush()
            facility_id = facility.id
        header = InstanceHeader(
            *(["1.2.840.10008.5.1.4.1.1.2", f"1.2.3.{n}", "1.2.840.10008.1.2.1"]),
            *(["1.2.3.study", "1.2.3.series", "P1", "", "Doe^Jane", "", "F"]),
            *(["", "", "", "", "", "", "CT", 1, "", "", "", "", n, 4, 4, None, 300]),
        )
        record = InstanceRecord(
            facility_id, header, f"north/{n}.dcm", 100, f"{n:064d}", datetime.now(UTC), False
        )
        assert index.write_instance(record).series_instances == n
        with pytest.raises(SameContent):
            index.write_instance(record)
    finally:
        index.close()


@pytest.mark.postgres
def test_an_index_at_0006_upgrades_to_the_function_from_the_file_and_back(pg_url: str) -> None:
    from alembic import command

    upgrade(pg_url, "0006")
    _write(pg_url, 1)  # 0004's function
    assert _function_body(pg_url) != ""

    upgrade(pg_url, "0007")
    assert current_revision(pg_url) == "0007"
    assert _function_body(pg_url) == _file_body()
    _write(pg_url, 2)

    command.downgrade(alembic_config(pg_url), "0006")
    assert current_revision(pg_url) == "0006"
    _write(pg_url, 3)
    upgrade(pg_url)
    _write(pg_url, 4)


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_0008_adds_the_deletion_tables_and_goes_back(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Tombstones, legal holds, findings and job leases (with the consistency check's lease
    row) come with 0008, and a downgrade to 0007 removes them, on both databases."""
    from alembic import command
    from sqlalchemy import inspect

    url = (
        request.getfixturevalue("pg_url")
        if database == "postgres"
        else f"sqlite:///{tmp_path / 'index.sqlite3'}"
    )
    tables = {"tombstone", "legal_hold", "consistency_finding", "job_lease"}
    upgrade(url, "0008")
    index = open_index(url)
    try:
        assert tables <= set(inspect(index.engine).get_table_names())
        with index.engine.connect() as conn:
            names = conn.execute(text("SELECT name FROM job_lease ORDER BY name")).scalars()
            assert names.all() == ["consistency", "retention"]
        command.downgrade(alembic_config(url), "0007")
        index.engine.dispose()
        assert not tables & set(inspect(index.engine).get_table_names())
    finally:
        index.close()


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_0011_lets_entries_that_allowed_every_service_ask_for_commitment(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """An archive upgraded from before storage commitment: its embedded default entry and the
    entries left at every service may ask for a commitment; an entry limited to fewer
    services stays limited. A downgrade takes the service away again."""
    from alembic import command
    from sqlalchemy import create_engine

    url = (
        request.getfixturevalue("pg_url")
        if database == "postgres"
        else f"sqlite:///{tmp_path / 'index.sqlite3'}"
    )
    every_service_before = ["echo", "store", "find", "move", "get"]
    upgrade(url, "0010")
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

        upgrade(url, "0011")  # (0015 gives such entries the worklist and MPPS too)
        assert services() == {
            "*": [*every_service_before, "commitment"],
            "CT1": ["echo", "store"],
        }
        command.downgrade(alembic_config(url), "0010")
        assert services() == {"*": every_service_before, "CT1": ["echo", "store"]}
    finally:
        engine.dispose()


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_0012_puts_the_stored_studies_on_the_worklist_ready_and_0013_adds_notes(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """An archive upgraded to the reading workflow: each study it held gets a workflow row in
    state ready (they were stable), routine, unassigned, arrived when it was stored. 0013 adds
    the notes table and the worklist's indexes; a downgrade to 0012 removes them."""
    from alembic import command
    from sqlalchemy import create_engine, inspect

    url = (
        request.getfixturevalue("pg_url")
        if database == "postgres"
        else f"sqlite:///{tmp_path / 'index.sqlite3'}"
    )
    upgrade(url, "0011")
    stored = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO facility (id, name, display_name, enabled, spec, idp_groups, "
                    "created_at, updated_at) VALUES (1, 'north', '', true, '{}', '[]', "
                    ":at, :at)"
                ),
                {"at": stored},
            )
            conn.execute(
                text(
                    "INSERT INTO patient (id, facility_id, patient_id, "
                    "issuer_of_patient_id, patient_name, patient_birth_date, "
                    "patient_sex) VALUES (1, 1, 'P1', '', '', '', '')"
                )
            )
            for pk in (1, 2):
                conn.execute(
                    text(
                        "INSERT INTO study (id, facility_id, patient_pk, patient_id, "
                        "issuer_of_patient_id, patient_name, patient_birth_date, patient_sex, "
                        "study_instance_uid, study_date, study_time, accession_number, "
                        "study_id, study_description, referring_physician_name, "
                        "modalities_in_study, number_of_series, number_of_instances, "
                        "size_bytes, created_at, updated_at) VALUES (:pk, 1, 1, 'P1', '', '', "
                        "'', '', :uid, '', '', '', '', '', '', 'CT', 1, 1, 10, :at, :at)"
                    ),
                    {"pk": pk, "uid": f"1.2.3.{pk}", "at": stored},
                )
        upgrade(url, "0012")
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT study_pk, facility_id, state, priority, critical, assignee, "
                    "arrived_at FROM study_workflow ORDER BY study_pk"
                )
            ).all()
        assert [row[:6] for row in rows] == [(pk, 1, "ready", 0, False, None) for pk in (1, 2)]
        arrived = rows[0][6]
        if isinstance(arrived, str):  # SQLite hands text back through a bare connection
            arrived = datetime.fromisoformat(arrived)
        assert arrived.replace(tzinfo=None) == stored.replace(tzinfo=None)

        upgrade(url, "0013")
        inspector = inspect(engine)
        assert "study_note" in inspector.get_table_names()
        indexes = {ix["name"] for ix in inspector.get_indexes("study_workflow")}
        assert {"ix_study_workflow_open", "ix_study_workflow_order"} <= indexes
        command.downgrade(alembic_config(url), "0012")
        inspector = inspect(engine)
        assert "study_note" not in inspector.get_table_names()
        assert "ix_study_workflow_open" not in {
            ix["name"] for ix in inspector.get_indexes("study_workflow")
        }
    finally:
        engine.dispose()
