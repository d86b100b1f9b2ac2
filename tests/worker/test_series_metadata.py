"""Series metadata bundles end to end: a series stored through ``ingest`` gets one bundle,
built by a real Celery worker (Redis broker) or by ``noctis serve``'s in-process queue, and a
fresh API process answers series and study metadata from it with one read instead of one
header per instance, byte for byte what the headers give."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from celery.contrib.testing.worker import start_worker
from sqlalchemy import select
from worker_support import (
    SLICES,
    CountingStore,
    Outcomes,
    bundle_keys,
    celery_archive,
    ct_series,
    empty_broker,
    wait_settled,
)

from noctis.api.app import create_app
from noctis.core.facilities import DEFAULT_FACILITY
from noctis.core.ingest import FacilityRef, IngestOutcome
from noctis.core.notices import BEAT_SECONDS
from noctis.core.queue import SERIES_METADATA, NullQueue
from noctis.core.runtime import Runtime
from noctis.dicom.metadata import BUNDLE_MINIMUM, bundle_key
from noctis.embedded import prepare
from noctis.index.models import Facility
from noctis.settings import Settings
from noctis.storage.filesystem import FilesystemStore
from noctis.worker import series_metadata as series_metadata_module
from noctis.worker.celery_app import create_celery
from noctis.worker.inprocess import register_tasks
from noctis.worker.queues import facility_queues
from noctis.worker.series_metadata import series_metadata
from noctis.worker.tasks import TASKS
from support import wait
from support.archive import embedded_settings, register_facility
from support.incoming import ingest_file
from support.redis import RedisServer
from support.web import client_for, create_user, token_for

QUIET = 1.0  # seconds a series must be quiet before its bundle is built (3 s in production)


@dataclass(frozen=True)
class BuiltSeries:
    settings: Settings
    study_uid: str
    series_uid: str
    bundle: str  # its object key
    object_keys: set[str]  # of the instances stored
    outcomes: list[str]  # of every series_metadata task
    bundle_writes: int


SETTLED = QUIET + BEAT_SECONDS + 0.5  # no task finishing for this long: all have run


@pytest.fixture(scope="module")
def celery_built(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BuiltSeries]:
    """A 30-instance series stored through ingest while a real Celery worker runs."""
    root = tmp_path_factory.mktemp("celery")
    settings = embedded_settings(root / "data", broker_url=empty_broker(redis_server))
    sender = celery_archive(settings)  # the SCP's side
    facility = register_facility(sender, "north")
    worker = celery_archive(settings)  # the worker's own archive, same index and objects
    outcomes = Outcomes(series_metadata)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(series_metadata_module, "QUIET_SECONDS", QUIET)
        patch.setitem(TASKS, SERIES_METADATA, outcomes)
        app = create_celery(settings, worker)
        with start_worker(
            app,
            pool="threads",
            concurrency=2,
            queues=facility_queues(worker),
            perform_ping_check=False,
            loglevel="WARNING",
            shutdown_timeout=30,
        ):
            results = [ingest_file(sender, facility, path) for path in ct_series(root / "series")]
            header = results[0].header
            key = bundle_key(facility.name, header.study_instance_uid, header.series_instance_uid)
            assert isinstance(worker.store, CountingStore)
            # The series is told to the worker once per beat, not once per instance; the
            # task of the beat after the last instance builds the bundle once it is quiet.
            stored = {r.object_key for r in results}
            wait.until(
                lambda: bundle_keys(worker.store.inner, key) == stored,
                what="a full bundle",
                timeout=20,
            )
            wait_settled(outcomes, SETTLED)
    built = BuiltSeries(
        settings=settings,
        study_uid=header.study_instance_uid,
        series_uid=header.series_instance_uid,
        bundle=key,
        object_keys={r.object_key for r in results if r.outcome is IngestOutcome.STORED},
        outcomes=list(outcomes.results),
        bundle_writes=worker.store.count("put", key),
    )
    sender.close()
    worker.close()
    yield built


def test_a_stored_series_gets_a_bundle_of_every_instance_built_about_once(
    celery_built: BuiltSeries,
) -> None:
    built = celery_built
    assert len(built.object_keys) == SLICES
    store = FilesystemStore(built.settings.resolved_storage_path())
    assert bundle_keys(store, built.bundle) == built.object_keys
    # Fewer tasks than instances ran: the series was told to the worker once per beat.
    # Tasks overtaken by a later instance gave way; the rest built it or found it current.
    assert len(built.outcomes) < SLICES - BUNDLE_MINIMUM, built.outcomes
    assert built.outcomes.count("built") == built.bundle_writes
    assert 1 <= built.bundle_writes <= 3, built.outcomes
    assert set(built.outcomes) <= {"built", "superseded", "current"}


def _metadata(app_archive: Runtime, settings: Settings, token: str, url: str) -> bytes:
    """GET ``url`` from a new API app: a new process cache, like a new API replica."""
    client = client_for(create_app(settings, app_archive), token)
    response = client.get(
        url, headers={"Accept": "application/dicom+json", "Accept-Encoding": "identity"}
    )
    assert response.status_code == 200, response.text
    return response.content


def test_a_fresh_api_reads_one_bundle_instead_of_every_header(
    celery_built: BuiltSeries,
) -> None:
    built, settings = celery_built, celery_built.settings
    store = CountingStore(FilesystemStore(settings.resolved_storage_path()))
    runtime = Runtime.open(settings, queue=NullQueue())
    runtime.store = store
    create_user(runtime, "rad", "radiologist", ["north"])
    token = token_for(runtime, "rad")
    series_url = f"/dicom-web/studies/{built.study_uid}/series/{built.series_uid}/metadata"
    study_url = f"/dicom-web/studies/{built.study_uid}/metadata"
    try:
        # Without the bundle: one header read per instance.
        saved = store.inner.get(built.bundle)
        store.inner.delete(built.bundle)
        store.reset()
        from_headers = _metadata(runtime, settings, token, series_url)
        assert store.count("get_range") == SLICES
        store.inner.put(built.bundle, io.BytesIO(saved), len(saved))

        # With it: one read, the same bytes.
        store.reset()
        from_bundle = _metadata(runtime, settings, token, series_url)
        assert store.reads() == [("get", built.bundle)]
        assert from_bundle == from_headers
        assert len(httpx.Response(200, content=from_bundle).json()) == SLICES

        store.reset()
        assert _metadata(runtime, settings, token, study_url) == from_headers  # one series
        assert store.reads() == [("get", built.bundle)]
    finally:
        runtime.close()


def _default_facility(runtime: Runtime) -> FacilityRef:
    with runtime.sessions() as session:
        facility = session.scalars(select(Facility).where(Facility.name == DEFAULT_FACILITY)).one()
        return FacilityRef(facility.id, facility.name)


def test_noctis_serve_builds_and_extends_the_bundle_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = prepare(embedded_settings(tmp_path / "data"))  # what `noctis serve` opens
    store = CountingStore(runtime.store)
    runtime.store = store
    outcomes = Outcomes(series_metadata)
    monkeypatch.setattr(series_metadata_module, "QUIET_SECONDS", QUIET)
    monkeypatch.setitem(TASKS, SERIES_METADATA, outcomes)
    register_tasks(runtime)  # as `noctis serve` does
    facility = _default_facility(runtime)
    files = ct_series(tmp_path / "series")
    try:
        first = [ingest_file(runtime, facility, path) for path in files[:25]]
        header = first[0].header
        key = bundle_key(facility.name, header.study_instance_uid, header.series_instance_uid)
        first_keys = {r.object_key for r in first}
        wait.until(
            lambda: bundle_keys(store.inner, key) == first_keys, what="a bundle of 25", timeout=20
        )
        wait_settled(outcomes, SETTLED)
        assert 1 <= store.count("put", key) <= 3, outcomes.results

        # More instances of the series arrive later: the bundle grows, and only the new
        # instances' headers are read.
        store.reset()
        later = [ingest_file(runtime, facility, path) for path in files[25:]]
        every_key = {r.object_key for r in first + later}
        wait.until(
            lambda: bundle_keys(store.inner, key) == every_key,
            what="a bundle of all 30",
            timeout=20,
        )
        wait_settled(outcomes, SETTLED)
        header_reads = {k for verb, k in store.calls if verb == "get_range"}
        assert header_reads == {r.object_key for r in later}
    finally:
        runtime.drain_tasks()
        runtime.close()
