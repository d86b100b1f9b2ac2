"""Routing under Celery workers on a real Redis broker, with failures: a destination (dcmtk's
storescp) killed and restarted mid-transfer, a `noctis worker` killed (SIGKILL) mid-forward,
and Redis restarted with the forwarding tasks queued. Each time every instance arrives, none
ends dead, and an instance received twice has been counted twice (attempts)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from celery.contrib.testing.worker import start_worker
from routing_support import (
    RefusingSCP,
    add_route,
    attempts,
    facility_with_destinations,
    received_uids,
    route_progress,
)
from worker_support import celery_archive

from noctis.core.ingest import FacilityRef
from noctis.core.queue import DEFAULT_QUEUE, ROUTE_STUDY, destination_queue
from noctis.core.routing import route_study
from noctis.core.runtime import Runtime
from noctis.settings import Settings
from noctis.worker.celery_app import create_celery
from noctis.worker.tasks import PERIODIC_JOBS
from support import wait
from support.archive import embedded_settings
from support.dcmtk import StoreSCP
from support.dicomdata import generate_ct_series, sop_instance_uid
from support.incoming import ingest_file
from support.logs import ServerLogs
from support.ports import free_port
from support.redis import RedisServer

PATIENT_RETRY = {"attempts": 50, "initialDelaySeconds": 0.2, "maxDelaySeconds": 1.0}
FAST = {"route_scan_seconds": 0.3, "route_claim_seconds": 3.0, "route_batch": 10}


def _settings(tmp_path: Path, broker: str) -> Settings:
    return embedded_settings(tmp_path / "data", broker_url=broker, **FAST)


def _study(
    runtime: Runtime, facility: FacilityRef, tmp_path: Path, slices: int
) -> tuple[str, set[str]]:
    files = generate_ct_series(tmp_path / "ct", slices=slices, size=32)
    study = ""
    for path in files:
        study = str(ingest_file(runtime, facility, path).header.study_instance_uid)
    return study, {sop_instance_uid(path) for path in files}


def _all_sent(runtime: Runtime, destination: str, count: int) -> bool:
    state = route_progress(runtime).get(destination, {})
    assert state.get("dead", 0) == 0, state
    return state.get("sent") == count


def test_storescp_killed_mid_transfer_gets_everything_once_back(
    tmp_path: Path, broker: str
) -> None:
    settings = _settings(tmp_path, broker)
    (tmp_path / "data").mkdir()
    runtime = celery_archive(settings)
    scp = StoreSCP(tmp_path / "received", ae_title="DEST").start()
    east = facility_with_destinations(runtime, "east", {"DEST": scp.port})
    add_route(runtime, "to-dest", facility="east", destinations=["DEST"], retry=PATIENT_RETRY)
    study, uids = _study(runtime, east, tmp_path, slices=250)  # a second or more of sending
    app = create_celery(settings, runtime, periodic_jobs=PERIODIC_JOBS)
    queues = [DEFAULT_QUEUE, destination_queue("DEST")]
    try:
        with start_worker(app, pool="threads", perform_ping_check=False, queues=queues):
            runtime.queue.send(ROUTE_STUDY, facility="east", study_instance_uid=study)
            wait.until(lambda: len(scp.files()) >= 10, what="the first instances", timeout=30)
            scp.stop()  # the destination goes down mid-transfer
            wait.until(
                lambda: route_progress(runtime)["DEST"]["lastError"],
                what="the failure to be reported",
                timeout=30,
            )
            assert route_progress(runtime)["DEST"]["sent"] < len(uids)
            scp.start()  # back, same port
            wait.until(lambda: _all_sent(runtime, "DEST", len(uids)), timeout=60, what="all sent")
    finally:
        scp.stop()
        runtime.close()
    assert set(received_uids(scp)) == uids


def _worker_process(settings: Settings, log: Path, queues: list[str]) -> subprocess.Popen[bytes]:
    assert settings.database_url and settings.broker_url
    environment = {
        **os.environ,
        "NOCTIS_MODE": "embedded",
        "NOCTIS_DATA_DIR": str(settings.data_dir),
        "NOCTIS_DATABASE_URL": settings.database_url,
        "NOCTIS_STORAGE_PATH": str(settings.resolved_storage_path()),
        "NOCTIS_BROKER_URL": settings.broker_url,
        "NOCTIS_WORKER_QUEUES": ",".join(queues),
        "NOCTIS_HEALTH_HOST": "127.0.0.1",
        "NOCTIS_HEALTH_PORT": str(free_port()),
        **{f"NOCTIS_{key.upper()}": str(value) for key, value in FAST.items()},
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "noctis.cli", "worker"],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_a_worker_killed_mid_forward_loses_nothing_and_counts_resends(
    tmp_path: Path, broker: str, server_logs: ServerLogs
) -> None:
    settings = _settings(tmp_path, broker)
    (tmp_path / "data").mkdir()
    runtime = celery_archive(settings)
    slow = RefusingSCP("SLOW", refuse=lambda uid: False, delay=0.05).start()
    east = facility_with_destinations(runtime, "east", {"SLOW": slow.port})
    add_route(runtime, "to-slow", facility="east", destinations=["SLOW"], retry=PATIENT_RETRY)
    study, uids = _study(runtime, east, tmp_path, slices=80)
    log = tmp_path / "worker.log"
    server_logs.watch("noctis worker", log)
    queues = [DEFAULT_QUEUE, destination_queue("SLOW")]
    first = _worker_process(settings, log, queues)
    second = None
    try:
        runtime.queue.send(ROUTE_STUDY, facility="east", study_instance_uid=study)
        wait.until(lambda: len(slow.answered) >= 15, what="a forward under way", timeout=60)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        sent_before = route_progress(runtime)["SLOW"]["sent"]
        assert sent_before < len(uids)
        second = _worker_process(settings, log, queues)
        wait.until(lambda: _all_sent(runtime, "SLOW", len(uids)), timeout=90, what="all sent")
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=30)
        slow.stop()
        counted = attempts(runtime)
        runtime.close()
    assert set(slow.received) == uids
    received = Counter(uid for uid, code in slow.answered if code == 0)
    resent = {uid: n for uid, n in received.items() if n > 1}
    for uid, times in resent.items():
        assert counted[uid] >= times, f"{uid} was received {times} times, counted {counted[uid]}"


def test_redis_restarted_with_forwards_queued_still_delivers(
    tmp_path: Path, broker: str, redis_server: RedisServer
) -> None:
    settings = _settings(tmp_path, broker)
    (tmp_path / "data").mkdir()
    runtime = celery_archive(settings)
    with StoreSCP(tmp_path / "received", ae_title="DEST") as scp:
        east = facility_with_destinations(runtime, "east", {"DEST": scp.port})
        add_route(runtime, "to-dest", facility="east", destinations=["DEST"])
        study, uids = _study(runtime, east, tmp_path, slices=20)
        # The study is routed and its forward queued on the broker; no worker runs yet.
        assert route_study(runtime, "east", study) == {"DEST": len(uids)}
        runtime.queue.send(ROUTE_STUDY, facility="east", study_instance_uid=study)
        with redis_server.offline():
            pass  # restarted: what was queued is gone (nothing is persisted)
        app = create_celery(settings, runtime, periodic_jobs=PERIODIC_JOBS)
        queues = [DEFAULT_QUEUE, destination_queue("DEST")]
        try:
            with start_worker(app, pool="threads", perform_ping_check=False, queues=queues):
                wait.until(lambda: _all_sent(runtime, "DEST", len(uids)), timeout=60, what="all")
        finally:
            runtime.close()
        assert set(received_uids(scp)) == uids
