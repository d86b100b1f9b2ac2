"""Several writers storing one study at once (parallel associations, several SCP processes):
the index must come out exactly as if they had taken turns."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from noctis.core.ingest import FacilityRef, IngestOutcome
from noctis.core.runtime import Runtime
from noctis.index.migrate import alembic_config, current_revision, upgrade
from noctis.index.models import Instance, Series, Study
from support.incoming import ingest_file

DicomFactory = Callable[..., Path]
STUDY = "1.2.826.0.1.3680043.8.498.77"
MODALITIES = ("CT", "MR", "PR", "SR")
PER_SERIES = 6
WRITERS = 8


def test_writers_of_one_study_keep_its_counters_exact(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: DicomFactory
) -> None:
    """Once a study exists, eight threads store three new series into it at once (and more of
    its first): every instance is counted once, and ModalitiesInStudy lists all four."""
    files = [
        make_dicom(
            StudyInstanceUID=STUDY,
            SeriesInstanceUID=f"{STUDY}.{series}",
            Modality=modality,
            InstanceNumber=number,
        )
        for number in range(1, PER_SERIES + 1)
        for series, modality in enumerate(MODALITIES, start=1)
    ]
    seed, files = files[0], files[1:]  # the study and its CT series exist before the rush
    assert ingest_file(runtime, default_facility, seed).outcome is IngestOutcome.STORED
    start = threading.Barrier(WRITERS)

    def store(batch: list[Path]) -> list[IngestOutcome]:
        start.wait()
        return [ingest_file(runtime, default_facility, path).outcome for path in batch]

    batches = [files[i::WRITERS] for i in range(WRITERS)]
    with ThreadPoolExecutor(WRITERS) as pool:
        outcomes = [o for batch in pool.map(store, batches) for o in batch]

    assert outcomes == [IngestOutcome.STORED] * len(files)
    files.append(seed)
    total_bytes = sum(path.stat().st_size for path in files)
    with runtime.sessions() as session:
        study = session.scalars(select(Study)).one()
        assert study.number_of_instances == len(files)
        assert study.number_of_series == len(MODALITIES)
        assert study.modalities_in_study == "\\".join(sorted(MODALITIES))
        assert study.size_bytes == total_bytes
        counts = dict(session.execute(select(Series.modality, Series.number_of_instances)).all())
        assert counts == dict.fromkeys(MODALITIES, PER_SERIES)
        assert session.scalar(select(func.count()).select_from(Instance)) == len(files)


def test_the_same_instance_sent_twice_at_once_is_stored_once(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: DicomFactory
) -> None:
    path = make_dicom(StudyInstanceUID=STUDY)
    start = threading.Barrier(4)

    def store(_: int) -> IngestOutcome:
        start.wait()
        return ingest_file(runtime, default_facility, path).outcome

    with ThreadPoolExecutor(4) as pool:
        outcomes = sorted(pool.map(store, range(4)))

    assert outcomes.count(IngestOutcome.STORED) == 1
    assert outcomes.count(IngestOutcome.DUPLICATE) == 3
    with runtime.sessions() as session:
        study = session.scalars(select(Study)).one()
        assert (study.number_of_instances, study.number_of_series) == (1, 1)
    objects = [key for key in _keys(runtime) if key.endswith(".dcm")]
    assert len(objects) == 1  # the losers removed the objects they had put


@pytest.mark.parametrize("runtime", ["postgres"], indirect=True)
def test_the_postgresql_write_function_comes_and_goes_with_its_migration(
    runtime: Runtime,
) -> None:
    from alembic import command
    from alembic.script import ScriptDirectory

    url = runtime.settings.resolved_database_url()
    runtime.engine.dispose()
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert current_revision(url) == head
    assert _has_write_function(runtime)
    command.downgrade(alembic_config(url), "0003")  # back to 0003's version of it
    assert _has_write_function(runtime)
    command.downgrade(alembic_config(url), "0002")
    assert not _has_write_function(runtime)
    upgrade(url)
    assert _has_write_function(runtime)


def _has_write_function(runtime: Runtime) -> bool:
    with runtime.engine.connect() as conn:
        found = conn.execute(
            text("SELECT count(*) FROM pg_proc WHERE proname = 'noctis_write_instance'")
        ).scalar()
    runtime.engine.dispose()
    return bool(found)


def _keys(runtime: Runtime) -> list[str]:
    from support.archive import stored_object_keys

    return list(stored_object_keys(runtime.store))
