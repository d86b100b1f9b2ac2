"""Fixtures for the domain core: an Archive on each index backend, and tiny DICOM files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from noctis.core.facilities import ensure_default_facility
from noctis.core.ingest import FacilityRef
from noctis.core.queue import NullQueue
from noctis.core.runtime import Runtime
from noctis.index.migrate import upgrade
from noctis.settings import Settings
from support.dicomdata import small_ct


@pytest.fixture(params=["sqlite", "postgres", "postgres-s3"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    """An Archive with a migrated index (SQLite or PostgreSQL) and a filesystem store, or
    PostgreSQL and S3 (the production pair)."""
    if request.param.startswith("postgres"):
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    upgrade(url)
    settings = Settings(data_dir=tmp_path, database_url=url)
    runtime = Runtime.open(settings, queue=NullQueue())
    if request.param == "postgres-s3":
        runtime.store = request.getfixturevalue("s3_store")
    yield runtime
    runtime.close()


@pytest.fixture
def default_facility(runtime: Runtime) -> FacilityRef:
    with runtime.sessions.begin() as session:
        facility = ensure_default_facility(session)
        return FacilityRef(facility.id, facility.name)


DicomFactory = Callable[..., Path]


@pytest.fixture
def make_dicom(tmp_path: Path) -> DicomFactory:
    """Write a small CT instance; keyword arguments override attributes."""
    counter = iter(range(1, 1_000_000))

    def make(**attributes: object) -> Path:
        ds = small_ct(**attributes)
        path = tmp_path / f"instance-{next(counter)}.dcm"
        ds.save_as(path, enforce_file_format=True)
        return path

    return make
