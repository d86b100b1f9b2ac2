"""`noctis worker` as it runs in a pod: it consumes the facilities' queues (also those of
facilities added later), answers its liveness and readiness probes, and a broker outage
never costs a store."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery.contrib.testing.worker import start_worker
from worker_support import (
    Outcomes,
    bundle_keys,
    celery_archive,
    empty_broker,
)

from noctis.core.ingest import IngestOutcome
from noctis.core.queue import INSTANCE_STORED
from noctis.dicom.metadata import BUNDLE_MINIMUM, bundle_key
from noctis.settings import Settings
from noctis.worker import liveness, queues
from noctis.worker.celery_app import create_celery
from noctis.worker.liveness import Heartbeat, heartbeat_path
from noctis.worker.series_metadata import instance_stored
from noctis.worker.tasks import TASKS
from support import wait
from support.archive import embedded_settings, indexed_objects, register_facility
from support.dicomdata import generate_ct_series
from support.incoming import ingest_file
from support.logs import ServerLogs
from support.ports import free_port
from support.redis import RedisServer


def _environment(settings: Settings, health_port: int) -> dict[str, str]:
    assert settings.database_url and settings.broker_url
    return {
        **os.environ,
        "NOCTIS_MODE": "embedded",
        "NOCTIS_DATA_DIR": str(settings.data_dir),
        "NOCTIS_DATABASE_URL": settings.database_url,
        "NOCTIS_STORAGE_PATH": str(settings.resolved_storage_path()),
        "NOCTIS_BROKER_URL": settings.broker_url,
        "NOCTIS_HEALTH_HOST": "127.0.0.1",
        "NOCTIS_HEALTH_PORT": str(health_port),
    }


def _liveness_probe(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noctis.worker.liveness"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_noctis_worker_serves_probes_and_builds_bundles(
    tmp_path: Path, broker: str, server_logs: ServerLogs
) -> None:
    settings = embedded_settings(tmp_path / "data", broker_url=broker)
    sender = celery_archive(settings)
    facility = register_facility(sender, "east")
    port = free_port()
    environment = _environment(settings, port)
    assert _liveness_probe(environment).returncode == 1  # not started: no heartbeat
    log = tmp_path / "worker.log"
    server_logs.watch("noctis worker", log)
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "noctis.cli", "worker"],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        health = f"http://127.0.0.1:{port}"

        def alive() -> bool:
            assert worker.poll() is None, log.read_text()
            try:
                return httpx.get(f"{health}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait.until(alive, what="the worker's /healthz", timeout=30)
        ready = httpx.get(f"{health}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"consumer": "ok", "index": "ok", "objects": "ok"}
        probe = _liveness_probe(environment)
        assert probe.returncode == 0, probe.stderr

        # It consumes the facility's queue: a stored series gets its bundle.
        files = generate_ct_series(tmp_path / "series", slices=5, size=32)
        results = [ingest_file(sender, facility, path) for path in files]
        header = results[0].header
        key = bundle_key("east", header.study_instance_uid, header.series_instance_uid)
        wanted = {r.object_key for r in results}
        wait.until(lambda: bundle_keys(sender.store, key) == wanted, what="the bundle", timeout=30)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            raise
        sender.close()
    assert code == 0, log.read_text()  # a warm shutdown


def test_a_worker_follows_new_facilities_and_beats_its_heartbeat(
    tmp_path: Path, broker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = embedded_settings(tmp_path / "data", broker_url=broker)
    sender = celery_archive(settings)
    register_facility(sender, "north")
    worker = celery_archive(settings)
    stored = Outcomes(instance_stored)
    monkeypatch.setitem(TASKS, INSTANCE_STORED, stored)
    monkeypatch.setattr(queues, "REFRESH_SECONDS", 0.2)
    monkeypatch.setattr(liveness, "HEARTBEAT_SECONDS", 0.1)
    heartbeat = Heartbeat(heartbeat_path(settings))
    app = create_celery(settings, worker, heartbeat=heartbeat, follow_facilities=True)
    try:
        with start_worker(
            app,
            pool="threads",
            queues=queues.facility_queues(worker),  # north's and the default queue
            perform_ping_check=False,
            loglevel="WARNING",
        ):
            wait.until(heartbeat.fresh, what="a first heartbeat", timeout=10)
            first = heartbeat.path.stat().st_mtime_ns
            wait.until(
                lambda: heartbeat.path.stat().st_mtime_ns > first,
                what="another heartbeat",
                timeout=20,
            )
            assert liveness.check(settings)[0]

            late = register_facility(sender, "late")  # after the worker started
            # A series large enough for a task to act on (smaller ones are not told).
            series = generate_ct_series(tmp_path / "late", slices=BUNDLE_MINIMUM, size=16)
            for path in series:
                assert ingest_file(sender, late, path).outcome is IngestOutcome.STORED
            wait.until(
                lambda: len(stored) >= 1,
                what="INSTANCE_STORED on the new facility's queue",
                timeout=20,
            )
        time.sleep(0.3)  # the timer under test: the stopped worker's heartbeat ages past 0.25 s
        alive, why = liveness.check(settings, max_age=0.25)  # stopped: the heartbeat ages
        assert not alive and "stuck" in why
    finally:
        sender.close()
        worker.close()


def test_a_broker_outage_never_fails_a_store(
    tmp_path: Path,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = embedded_settings(tmp_path / "data", broker_url=empty_broker(redis_server))
    runtime = celery_archive(settings)
    facility = register_facility(runtime, "north")
    # A series large enough to be told to the tasks (smaller ones are not).
    series = generate_ct_series(tmp_path / "series", slices=BUNDLE_MINIMUM, size=16)
    # A store never waits for the broker: nothing is sent on the thread that stores.
    storing = threading.Event()
    sent_while_storing: list[str] = []
    queue_send = runtime.queue.send

    def send(task: str, /, **options: Any) -> None:
        if storing.is_set() and threading.current_thread() is threading.main_thread():
            sent_while_storing.append(task)
        queue_send(task, **options)

    monkeypatch.setattr(runtime.queue, "send", send)
    try:
        with redis_server.offline(), caplog.at_level(logging.ERROR, logger="noctis.core.queue"):
            storing.set()
            results = [ingest_file(runtime, facility, path) for path in series]
            storing.clear()
            runtime.notices.flush()  # the series' notice, sent at the next beat otherwise
        assert [r.outcome for r in results] == [IngestOutcome.STORED] * len(series)
        for path, result in zip(series, results, strict=True):
            assert runtime.store.get(result.object_key) == path.read_bytes()
        assert indexed_objects(runtime) == {
            r.header.sop_instance_uid: r.object_key for r in results
        }
        assert "could not queue task noctis.instance_stored" in caplog.text
        assert sent_while_storing == [], "a store sent to the broker itself"
    finally:
        runtime.close()
