"""The deletion sweep under a real Celery worker (Redis broker) on the production pair,
PostgreSQL + S3: kicked by the deletion, and on its clock when the kick is lost."""

from __future__ import annotations

from pathlib import Path

from celery.contrib.testing.worker import start_worker
from pydicom.uid import generate_uid
from sqlalchemy import select

from noctis.core.deletion import Actor, Target, delete
from noctis.core.queue import CeleryQueue, NullQueue
from noctis.core.runtime import Runtime
from noctis.index.deletion import Tombstone
from noctis.storage.s3 import S3Store
from noctis.worker.celery_app import create_celery
from noctis.worker.sweep import DELETION_SWEEP
from support import wait
from support.archive import open_runtime, production_settings, register_facility
from support.dicomdata import small_ct
from support.incoming import ingest_file

ADMIN = Actor("admin", "user", "127.0.0.1")


def _archive(tmp_path: Path, pg_url: str, store: S3Store, **overrides: object) -> Runtime:
    settings = production_settings(
        tmp_path,
        pg_url,
        s3_endpoint=store.endpoint,
        s3_bucket=store.bucket,
        s3_access_key="unused",
        s3_secret_key="unused",
        **overrides,
    )
    return open_runtime(settings, store=store)


def _study(runtime: Runtime, tmp_path: Path, instances: int = 20) -> tuple[int, str]:
    facility = register_facility(runtime, "north")
    study, series = generate_uid(), generate_uid()
    for number in range(instances):
        path = tmp_path / f"{number}.dcm"
        small_ct(
            StudyInstanceUID=study, SeriesInstanceUID=series, InstanceNumber=number + 1
        ).save_as(path, enforce_file_format=True)
        ingest_file(runtime, facility, path)
    return facility.id, study


def _tombstones(runtime: Runtime) -> int:
    with runtime.reader() as session:
        return len(session.scalars(select(Tombstone.id)).all())


def _objects(store: S3Store) -> list[str]:
    return [str(o.key) for o in store.list_objects("")]


def test_the_worker_sweeps_what_a_deletion_kicks(tmp_path, pg_url, s3_store, broker) -> None:
    runtime = _archive(tmp_path, pg_url, s3_store, broker_url=broker)
    runtime.queue = CeleryQueue(broker)
    worker_runtime = _archive(tmp_path, pg_url, s3_store, broker_url=broker)
    app = create_celery(worker_runtime.settings, worker_runtime)
    try:
        facility_id, study = _study(runtime, tmp_path)
        assert len(_objects(s3_store)) == 20
        with start_worker(app, pool="threads", perform_ping_check=False, loglevel="WARNING"):
            assert delete(runtime, Target(facility_id, study), ADMIN).instances == 20
            wait.until(lambda: not _objects(s3_store), timeout=30, what="the kicked sweep")
            wait.until(lambda: not _tombstones(runtime), timeout=10, what="tombstones gone")
    finally:
        runtime.close()
        worker_runtime.close()


def test_the_periodic_sweep_finishes_what_no_kick_started(
    tmp_path, pg_url, s3_store, broker
) -> None:
    runtime = _archive(tmp_path, pg_url, s3_store)
    runtime.queue = NullQueue()  # the kick is lost (a broker outage, a crash after the commit)
    worker_runtime = _archive(
        tmp_path, pg_url, s3_store, broker_url=broker, deletion_sweep_seconds=0.2
    )
    app = create_celery(worker_runtime.settings, worker_runtime, periodic_jobs=[DELETION_SWEEP])
    try:
        facility_id, study = _study(runtime, tmp_path)
        assert delete(runtime, Target(facility_id, study), ADMIN).instances == 20
        assert len(_objects(s3_store)) == 20
        with start_worker(app, pool="threads", perform_ping_check=False, loglevel="WARNING"):
            wait.until(lambda: not _objects(s3_store), timeout=30, what="the periodic sweep")
            wait.until(lambda: not _tombstones(runtime), timeout=10, what="tombstones gone")
    finally:
        runtime.close()
        worker_runtime.close()
