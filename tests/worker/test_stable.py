"""Study-stable detection: a quiet study is declared stable once per version, by one of
several competing workers, its derivatives are made, it is routed, and the state
survives a restart. On SQLite and PostgreSQL, embedded (in-process queue) and under Celery
on a real Redis broker."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from routing_support import add_route, facility_with_destinations, received_uids
from sqlalchemy import func, insert, select, update

from noctis.core.ingest import FacilityRef
from noctis.core.queue import InProcessQueue
from noctis.core.runtime import Runtime
from noctis.dicom.metadata import bundle_key
from noctis.dicom.thumbnail import thumbnail_key
from noctis.index.models import Facility, Instance, Patient, Study
from noctis.index.stable import StudyStable, study_stability
from noctis.worker.inprocess import register_tasks, start_periodic
from noctis.worker.stable import detect_stable_studies
from support import wait
from support.archive import embedded_settings, open_runtime, register_facility
from support.dcmtk import StoreSCP
from support.dicomdata import generate_ct_series
from support.incoming import ingest_file
from support.ports import free_ports

# Long enough that a slow store between two instances of one test series never makes the
# study stable midway; short enough to keep the tests short.
QUIET = 1.5


class Destination:
    """dcmtk's storescp as the destination of a stable-triggered Route of facility north:
    what it received is what the study's routing sent."""

    def __init__(self, scp: StoreSCP) -> None:
        self.scp = scp

    def routes(self, runtime: Runtime) -> FacilityRef:
        """Register facility north with this destination and a Route to it on stable."""
        facility = facility_with_destinations(runtime, "north", {self.scp.ae_title: self.scp.port})
        add_route(
            runtime,
            "to-pacs",
            facility="north",
            destinations=[self.scp.ae_title],
            trigger="stable",
        )
        return facility

    def received(self) -> Counter[str]:
        """SOP Instance UID -> how many times it arrived."""
        return Counter(received_uids(self.scp))


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'index.sqlite3'}"


def _settings(tmp_path: Path, database_url: str, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "database_url": database_url,
        "stable_after_seconds": QUIET,
        "stable_sweep_seconds": 0.05,
    }
    return embedded_settings(tmp_path, **(values | overrides))


def _store_series(
    runtime: Runtime, facility: Any, directory: Path, study_uid: str | None = None, seed: int = 0
) -> tuple[str, str, list[str]]:
    """Store a 5-slice CT series; (study UID, series UID, object keys)."""
    files = generate_ct_series(
        directory, slices=5, size=32, study_instance_uid=study_uid, seed=seed
    )
    results = [ingest_file(runtime, facility, path) for path in files]
    header = results[0].header
    return header.study_instance_uid, header.series_instance_uid, [r.object_key for r in results]


def _sop_uid(runtime: Runtime, object_key: str) -> str:
    with runtime.sessions() as session:
        return session.scalar(
            select(Instance.sop_instance_uid).where(Instance.object_key == object_key)
        )


def _stability(runtime: Runtime, study_uid: str) -> Any:
    with runtime.sessions() as session:
        pk = session.scalar(select(Study.id).where(Study.study_instance_uid == study_uid))
        return study_stability(session, pk)


@contextlib.contextmanager
def _embedded(settings: Any, received: Path) -> Iterator[tuple[Runtime, Destination]]:
    """An archive as `noctis serve` runs it (tasks on the in-process queue, periodic jobs on
    their thread) and a storescp its stable studies can be routed to."""
    runtime = open_runtime(settings)
    runtime.queue = InProcessQueue()
    register_tasks(runtime)
    periodic = start_periodic(runtime)
    try:
        with StoreSCP(received, ae_title="PACS") as scp:
            yield runtime, Destination(scp)
    finally:
        periodic.stop()
        runtime.queue.drain()
        runtime.close()


def test_embedded_a_quiet_study_is_stable_once_then_again_after_more_instances(
    tmp_path: Path, database_url: str
) -> None:
    with _embedded(_settings(tmp_path, database_url), tmp_path / "pacs") as (runtime, pacs):
        facility = pacs.routes(runtime)
        study, series, keys = _store_series(runtime, facility, tmp_path / "a")
        first = {_sop_uid(runtime, key) for key in keys}
        wait.until(lambda: set(pacs.received()) == first, what="the study routed", timeout=30)
        wait.until(lambda: _stability(runtime, study).derivatives_done, what="done", timeout=10)
        state = _stability(runtime, study)
        assert state.stable and state.times == 1 and state.stable_at is not None
        # Its derivatives: the series' metadata bundle and thumbnail (middle slice).
        assert runtime.store.exists(bundle_key("north", study, series))
        middle = keys[len(keys) // 2]
        thumb = runtime.store.get(thumbnail_key("north", study, series, middle))
        assert thumb[:3] == b"\xff\xd8\xff"  # a JPEG
        # The same version is never declared again, however often the sweep runs.
        assert detect_stable_studies(runtime) == []

        # More instances: a new version, stable again once quiet, routed a second time: the
        # new instances arrive, the first ones are not sent again.
        _, second, added = _store_series(runtime, facility, tmp_path / "b", study_uid=study, seed=1)
        assert not _stability(runtime, study).stable
        every = first | {_sop_uid(runtime, key) for key in added}
        wait.until(lambda: set(pacs.received()) == every, what="routed again", timeout=30)
        wait.until(lambda: _stability(runtime, study).derivatives_done, what="done", timeout=10)
        assert _stability(runtime, study).times == 2
        assert runtime.store.exists(bundle_key("north", study, second))
        assert pacs.received() == Counter(every)  # each once


def test_a_facility_overrides_the_quiet_time(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, f"sqlite:///{tmp_path / 'index.sqlite3'}", stable_after_seconds=3600
    )
    runtime = open_runtime(settings)
    try:
        north = register_facility(runtime, "north")
        register_facility(runtime, "south")
        with runtime.sessions.begin() as session:
            session.execute(
                update(Facility)
                .where(Facility.name == "north")
                .values(spec={"stableAfterSeconds": 0.2})
            )
        study, _, _ = _store_series(runtime, north, tmp_path / "a")
        south = register_facility(runtime, "south")
        other, _, _ = _store_series(runtime, south, tmp_path / "b")
        declared = wait.until(
            lambda: detect_stable_studies(runtime), what="north's study stable", timeout=10
        )
        assert [d.study_instance_uid for d in declared] == [study]  # south waits an hour
        assert not _stability(runtime, other).stable
    finally:
        runtime.close()


def test_the_state_survives_a_restart_and_a_lost_task_is_sent_again(
    tmp_path: Path, database_url: str
) -> None:
    settings = _settings(tmp_path, database_url, stable_after_seconds=0.2, stable_retry_seconds=2)
    # A worker declares the study stable and dies before its task runs (the queue drops it).
    first = open_runtime(settings)
    facility = register_facility(first, "north")
    study, _, keys = _store_series(first, facility, tmp_path / "a")
    uids = Counter(_sop_uid(first, key) for key in keys)
    declared = wait.until(lambda: detect_stable_studies(first), what="declared", timeout=10)
    assert [d.study_instance_uid for d in declared] == [study]
    first.close()

    # Restarted: the declared version is remembered, so not declared again...
    with _embedded(settings, tmp_path / "pacs") as (runtime, pacs):
        pacs.routes(runtime)  # declared while the worker was down
        assert _stability(runtime, study).times == 1
        # ...but its unfinished task is sent again once the retry time has passed.
        wait.until(lambda: pacs.received() == uids, what="the lost task again", timeout=20)
        wait.until(lambda: _stability(runtime, study).derivatives_done, what="done", timeout=10)
        state = _stability(runtime, study)
        assert state.stable and state.times == 1
        # Done: never sent again.
        assert detect_stable_studies(runtime) == []
        assert pacs.received() == uids


def _worker_environment(settings: Any, health_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "NOCTIS_MODE": "embedded",
        "NOCTIS_DATA_DIR": str(settings.data_dir),
        "NOCTIS_DATABASE_URL": settings.database_url,
        "NOCTIS_STORAGE_PATH": str(settings.resolved_storage_path()),
        "NOCTIS_BROKER_URL": settings.broker_url,
        "NOCTIS_HEALTH_HOST": "127.0.0.1",
        "NOCTIS_HEALTH_PORT": str(health_port),
        "NOCTIS_STABLE_AFTER_SECONDS": str(QUIET),
        "NOCTIS_STABLE_SWEEP_SECONDS": "0.05",
    }


def _stabilised(port: int) -> float:
    """noctis_studies_stabilised_total{facility="north"} on a worker's /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith('noctis_studies_stabilised_total{facility="north"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_two_worker_processes_declare_each_study_version_once(
    tmp_path: Path, database_url: str, broker: str
) -> None:
    """Two `noctis worker` processes sweep the same index every 50 ms: each study is declared
    stable by one of them, once; its task runs and finishes."""
    settings = _settings(tmp_path / "data", database_url, broker_url=broker)
    sender = open_runtime(settings)  # the SCP's side: stores, sends nothing
    facility = register_facility(sender, "north")
    ports = free_ports(2)
    workers = []
    try:
        for n, port in enumerate(ports):
            log = (tmp_path / f"worker{n}.log").open("wb")
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "noctis.cli", "worker"],
                    env=_worker_environment(settings, port),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
        for port in ports:
            wait.until(lambda p=port: _healthy(p), what="a worker's /healthz", timeout=60)
        studies = [_store_series(sender, facility, tmp_path / f"s{n}")[0] for n in range(4)]

        def all_done() -> bool:
            return all(_stability(sender, s).derivatives_done for s in studies)

        wait.until(all_done, what="every study stable, its task done", timeout=60)
        # One more study, stored after: by the time it is declared, both workers have swept
        # the first four again and again.
        last = _store_series(sender, facility, tmp_path / "last")[0]
        wait.until(lambda: _stability(sender, last).derivatives_done, what="last", timeout=60)
        counts = [_stabilised(port) for port in ports]
        assert sum(counts) == 5, counts
        for study in [*studies, last]:
            state = _stability(sender, study)
            assert state.stable and state.times == 1
        for n in range(len(ports)):
            log = (tmp_path / f"worker{n}.log").read_text()
            assert "Traceback" not in log, log
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        sender.close()


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _quiet_studies(runtime: Runtime, count: int) -> list[str]:
    """``count`` study rows last written an hour ago (the index only: no objects)."""
    written = datetime.now(UTC) - timedelta(hours=1)
    uids = [f"1.2.826.0.1.3680043.10.7.{n}" for n in range(count)]
    with runtime.sessions.begin() as session:
        facility = session.scalar(select(Facility).where(Facility.name == "north"))
        assert facility is not None
        patient = Patient(facility_id=facility.id, patient_id="P-QUIET")
        session.add(patient)
        session.flush()
        session.execute(
            insert(Study),
            [
                {
                    "facility_id": facility.id,
                    "patient_pk": patient.id,
                    "study_instance_uid": uid,
                    "created_at": written,
                    "updated_at": written,
                }
                for uid in uids
            ],
        )
    return uids


def test_concurrent_sweeps_declare_each_study_once(tmp_path: Path, database_url: str) -> None:
    """Four sweeps, each with its own engine, race over 400 quiet studies, 25 at a time. They
    start each round together, so every round they find the same quiet studies and race to
    declare them: each study is declared by one sweep, none twice, none missed."""
    settings = _settings(tmp_path, database_url, stable_sweep_batch=25)
    runtimes = [open_runtime(settings) for _ in range(4)]
    try:
        register_facility(runtimes[0], "north")
        uids = _quiet_studies(runtimes[0], 400)
        declared: list[list[str]] = [[] for _ in runtimes]
        rounds = 0
        round_start = threading.Barrier(len(runtimes))
        round_end = threading.Barrier(len(runtimes))
        left = [len(uids)]

        def sweep(n: int) -> None:
            nonlocal rounds
            while True:
                round_start.wait(timeout=60)
                if left[0] == 0:
                    return
                declared[n] += [d.study_instance_uid for d in detect_stable_studies(runtimes[n])]
                if round_end.wait(timeout=60) == 0:  # one thread counts what is left
                    left[0] = _undeclared(runtimes[n])
                    rounds += 1

        threads = [threading.Thread(target=sweep, args=(n,)) for n in range(len(runtimes))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        everything = [uid for found in declared for uid in found]
        assert sorted(everything) == sorted(uids)  # each once: none twice, none missed
        assert rounds >= len(uids) // 25 // len(runtimes), "fewer rounds than batches allow"
    finally:
        for runtime in runtimes:
            runtime.close()


def _undeclared(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        declared = session.scalar(select(func.count()).select_from(StudyStable)) or 0
        studies = session.scalar(select(func.count()).select_from(Study)) or 0
    return int(studies) - int(declared)
