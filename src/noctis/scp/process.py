"""``noctis scp``: the SCP process (one `Scp`, or several processes on one port).

`run(settings)` serves until SIGTERM or Ctrl-C: it stops accepting at once, lets open
associations finish for up to ``settings.scp_drain_seconds`` (25 s by default), aborts what is
left, then exits. With ``scp_processes > 1``, `supervise` runs that many processes accepting
from one listening socket (one Python process cannot store faster than its GIL allows; several
can). Either way one health/metrics endpoint serves them all.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from noctis.core import heap
from noctis.core.probes import HealthServer
from noctis.core.runtime import Runtime
from noctis.scp.lifecycle import clean_spool, stop_on_signals
from noctis.scp.listener import shared_listener
from noctis.scp.metrics import MULTIPROC_ENV, exposition
from noctis.scp.server import Scp
from noctis.scp.supervisor import Siblings
from noctis.settings import Settings

log = logging.getLogger(__name__)


def run(settings: Settings) -> None:
    """``noctis scp``: serve until SIGTERM or Ctrl-C."""
    if settings.embedded:
        prepare_embedded(settings)
    if settings.scp_processes > 1:
        supervise(settings)
        return
    stopping = stop_on_signals()
    clean_spool(settings.resolved_spool_dir())
    runtime = Runtime.open(settings)
    scp = Scp(runtime).start()
    health = HealthServer(
        settings.health_host,
        settings.health_port,
        alive=lambda: scp.serving,
        ready=runtime.readiness,
        metrics=exposition,
    ).start()
    heap.settle()
    try:
        while not stopping.wait(0.5):
            pass
        log.info("stopping: no new associations; draining open ones")
        scp.stop()
    finally:
        health.stop()
        runtime.close()


def prepare_embedded(settings: Settings) -> None:
    """Embedded mode works out of the box: migrated index, loopback-only default facility."""
    from noctis.core.facilities import ensure_default_facility
    from noctis.index.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)  # SQLite creates files, not dirs
    upgrade(settings.resolved_database_url())
    runtime = Runtime.open(settings)
    try:
        with runtime.sessions.begin() as session:
            ensure_default_facility(session)
    finally:
        runtime.close()
    log.warning("embedded mode: facility 'default' accepts any calling AE title from loopback only")


def supervise(settings: Settings) -> None:
    """``noctis scp`` with ``scp_processes > 1``: this process is SCP number 0 and the
    supervisor of the N-1 others (`Siblings`): it starts them, restarts one that dies, and is
    the only process serving health and metrics. Readiness adds "is every SCP process
    listening" to the archive's own check; ``/metrics`` adds up every process's samples
    (prometheus_client multiprocess mode, files in ``PROMETHEUS_MULTIPROC_DIR``, a temp dir
    unless the environment names one). No process only supervises: each one costs ~100 MB
    of interpreter and libraries."""
    count = settings.scp_processes
    metrics_dir, owned = _metrics_dir()
    if "prometheus_client" in sys.modules:
        log.warning("prometheus_client was imported early: this process's metrics stay local")
    # Every process, this one included, must see it before it imports prometheus_client.
    os.environ[MULTIPROC_ENV] = str(metrics_dir)
    stopping = stop_on_signals()
    clean_spool(settings.resolved_spool_dir())  # before any process receives into it
    listener = shared_listener(settings.scp_host, settings.scp_port, count)
    siblings = Siblings(settings, count - 1, listener)
    siblings.metrics_dir = metrics_dir
    siblings.start()
    runtime = Runtime.open(settings)
    scp = Scp(runtime, listener=listener).start()

    def ready() -> dict[str, str]:
        report = runtime.readiness()
        serving = int(scp.serving) + siblings.serving()
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
    heap.settle()
    try:
        while not stopping.wait(0.5):
            siblings.restart_dead()
        log.info("stopping %d SCP processes", count)
        siblings.terminate()
        scp.stop()
        siblings.wait()
    finally:
        health.stop()
        runtime.close()
        if owned:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _metrics_dir() -> tuple[Path, bool]:
    named = os.environ.get(MULTIPROC_ENV)
    if named:
        directory = Path(named)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):  # samples of a previous run would add up
            stale.unlink()
        return directory, False
    return Path(tempfile.mkdtemp(prefix="noctis-scp-metrics-")), True
