"""Migration 0010 (study_stable) upgrades an index at 0007 and back, on SQLite and
PostgreSQL, keeping its studies. The studies stored before it count as stable already (an
upgrade never sends the archive's past to routing) until they receive another instance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, select, update

from noctis.index.db import open_index
from noctis.index.migrate import alembic_config, current_revision, upgrade
from noctis.index.models import Facility, Patient, Study
from noctis.index.stable import claim_stable, find_quiet, study_stability


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'index.sqlite3'}"


def test_0010_adds_study_stable_and_back(url: str) -> None:
    upgrade(url, "0007")
    index = open_index(url)
    try:
        long_ago = datetime.now(UTC) - timedelta(hours=1)
        with index.sessions.begin() as session:
            facility = Facility(name="north")
            session.add(facility)
            session.flush()
            patient = Patient(facility_id=facility.id, patient_id="P1")
            session.add(patient)
            session.flush()
            session.add(
                Study(
                    facility_id=facility.id,
                    patient_pk=patient.id,
                    study_instance_uid="1.2.3",
                    updated_at=long_ago,
                )
            )
        upgrade(url, "0010")
        assert "study_stable" in inspect(index.engine).get_table_names()
        now = datetime.now(UTC)
        with index.sessions.begin() as session:
            ids = [facility.id]
            pk = session.scalar(select(Study.id))
            state = study_stability(session, pk)
            assert state.stable and state.derivatives_done and state.times == 1
            assert find_quiet(session, ids, now, 10) == []
            assert claim_stable(session, index.insert, [pk], now, now) == []
            # Another instance, quiet since: stable again.
            session.execute(update(Study).values(updated_at=now - timedelta(minutes=5)))
            assert find_quiet(session, ids, now, 10) == [pk]
            claimed = claim_stable(session, index.insert, [pk], now, now)
            assert [c.study_instance_uid for c in claimed] == ["1.2.3"]
            assert study_stability(session, pk).times == 2
        command.downgrade(alembic_config(url), "0007")
        assert current_revision(url) == "0007"
        assert "study_stable" not in inspect(index.engine).get_table_names()
        with index.sessions() as session:
            assert session.query(Study).count() == 1
    finally:
        index.close()
