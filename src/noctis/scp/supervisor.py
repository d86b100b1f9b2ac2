"""``noctis scp`` with ``scp_processes > 1``: N SCP processes on one port (SO_REUSEPORT).

The parent binds no DICOM port. It starts the children (spawned, so none inherits a lock,
a socket or a database connection), restarts one that dies, and is the only process serving
health and metrics: readiness adds "are all SCP processes running" to the archive's own check,
and ``/metrics`` adds up the children's samples (prometheus_client multiprocess mode, files in
``PROMETHEUS_MULTIPROC_DIR``, a temp dir unless the environment names one).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from noctis.archive import Archive
from noctis.scp.health import HealthServer
from noctis.scp.metrics import MULTIPROC_ENV, exposition, mark_process_dead
from noctis.settings import Settings

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0


def supervise(settings: Settings) -> None:
    from noctis.scp.server import DRAIN_TIMEOUT, clean_spool, stop_on_signals

    count = settings.scp_processes
    metrics_dir, owned = _metrics_dir()
    # Inherited by the children, which must see it before they import prometheus_client.
    os.environ[MULTIPROC_ENV] = str(metrics_dir)
    stopping = stop_on_signals()
    clean_spool(settings.resolved_spool_dir())  # before any child receives into it
    context = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()

    listening: list[Any] = [None] * count  # per child: set once its socket accepts

    def start(index: int) -> BaseProcess:
        listening[index] = context.Event()
        process = context.Process(
            target=serve_child,
            args=(settings, level, listening[index]),
            name=f"noctis-scp-{index}",
            daemon=False,
        )
        process.start()
        return process

    workers = [start(i) for i in range(count)]
    archive = Archive.open(settings)

    def ready() -> dict[str, str]:
        report = archive.readiness()
        serving = sum(p.is_alive() and e.is_set() for p, e in zip(workers, listening, strict=True))
        report["scp-processes"] = "ok" if serving == count else f"{serving} of {count} serving"
        return report

    health = HealthServer(
        settings.health_host,
        settings.health_port,
        alive=lambda: any(p.is_alive() for p in workers),
        ready=ready,
        metrics=lambda: exposition(str(metrics_dir)),
    ).start()
    log.info("started %d SCP processes on port %d", count, settings.scp_port)
    try:
        while not stopping.wait(0.5):
            for index, process in enumerate(workers):
                if process.is_alive():
                    continue
                log.error(
                    "SCP process %s exited with %s; restarting", process.pid, process.exitcode
                )
                _forget(process, metrics_dir)
                time.sleep(RESTART_DELAY)
                workers[index] = start(index)
        log.info("stopping %d SCP processes", count)
        for process in workers:
            process.terminate()  # SIGTERM: each drains its own associations
        for process in workers:
            process.join(DRAIN_TIMEOUT + 5)
            if process.is_alive():
                process.kill()
                process.join(5)
            _forget(process, metrics_dir)
    finally:
        health.stop()
        archive.close()
        if owned:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def serve_child(settings: Settings, log_level: int, listening: Any) -> None:
    """One SCP process sharing the port with its siblings."""
    from noctis.scp.server import Scp, stop_on_signals

    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    stopping = stop_on_signals()
    archive = Archive.open(settings)
    try:
        scp = Scp(archive, reuse_port=True).start()
        listening.set()
        while not stopping.wait(0.5):
            pass
        scp.stop()
    finally:
        archive.close()


def _metrics_dir() -> tuple[Path, bool]:
    named = os.environ.get(MULTIPROC_ENV)
    if named:
        directory = Path(named)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):  # samples of a previous run would add up
            stale.unlink()
        return directory, False
    return Path(tempfile.mkdtemp(prefix="noctis-scp-metrics-")), True


def _forget(process: BaseProcess, metrics_dir: Path) -> None:
    if process.pid is not None:
        mark_process_dead(process.pid, str(metrics_dir))
