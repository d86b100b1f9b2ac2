"""``noctis scp`` with ``scp_processes > 1``: N SCP processes on one port (SO_REUSEPORT).

This process is SCP number 0 and the supervisor of the N-1 others: it starts them (spawned, so
none inherits a lock, a socket or a database connection), restarts one that dies, and is the
only process serving health and metrics. Readiness adds "is every SCP process listening" to
the archive's own check; ``/metrics`` adds up every process's samples (prometheus_client
multiprocess mode, files in ``PROMETHEUS_MULTIPROC_DIR``, a temp dir unless the environment
names one). No process only supervises: each one costs ~100 MB of interpreter and libraries.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from noctis.archive import Archive
from noctis.probes import HealthServer
from noctis.scp.metrics import MULTIPROC_ENV, exposition, mark_process_dead
from noctis.settings import Settings

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0


def supervise(settings: Settings) -> None:
    from noctis.scp.server import Scp, clean_spool, stop_on_signals

    count = settings.scp_processes
    metrics_dir, owned = _metrics_dir()
    if "prometheus_client" in sys.modules:
        log.warning("prometheus_client was imported early: this process's metrics stay local")
    # Every process, this one included, must see it before it imports prometheus_client.
    os.environ[MULTIPROC_ENV] = str(metrics_dir)
    stopping = stop_on_signals()
    clean_spool(settings.resolved_spool_dir())  # before any process receives into it
    context = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    listening: dict[int, Any] = {}  # per sibling: set once its socket accepts

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

    siblings = {index: start(index) for index in range(1, count)}
    archive = Archive.open(settings)
    scp = Scp(archive, reuse_port=True).start()

    def ready() -> dict[str, str]:
        report = archive.readiness()
        serving = int(scp.serving) + sum(
            p.is_alive() and listening[i].is_set() for i, p in siblings.items()
        )
        report["scp-processes"] = "ok" if serving == count else f"{serving} of {count} serving"
        return report

    health = HealthServer(
        settings.health_host,
        settings.health_port,
        alive=lambda: scp.serving,
        ready=ready,
        metrics=lambda: exposition(str(metrics_dir)),
    ).start()
    log.info("%d SCP processes on port %d", count, settings.scp_port)
    try:
        while not stopping.wait(0.5):
            for index, process in siblings.items():
                if process.is_alive():
                    continue
                log.error(
                    "SCP process %s exited with %s; restarting", process.pid, process.exitcode
                )
                _forget(process, metrics_dir)
                time.sleep(RESTART_DELAY)
                siblings[index] = start(index)
        log.info("stopping %d SCP processes", count)
        for process in siblings.values():
            process.terminate()  # SIGTERM: each drains its own associations
        scp.stop()
        for process in siblings.values():
            process.join(settings.scp_drain_seconds + 5)
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
