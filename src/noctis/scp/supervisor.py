"""Several SCP processes on one port: ``noctis scp`` and ``noctis serve`` with
``scp_processes > 1``. They accept from one listening socket, made here and passed to each
(`noctis.scp.fast.association.listening_socket`), so a busy process leaves the next association to
an idle one. `Siblings` starts, restarts and drains the others (``noctis serve`` keeps its web
side, its tasks and SCP number 0 in its own process, and each sibling runs the tasks of what it
stores).

``noctis scp`` (`supervise`): this process is SCP number 0 and the supervisor of the N-1
others: it starts them (spawned, so
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
import socket
import sys
import tempfile
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from noctis.core import heap
from noctis.core.probes import HealthServer
from noctis.core.queue import InProcessQueue
from noctis.core.runtime import Runtime
from noctis.scp.fast.association import listening_socket
from noctis.scp.metrics import MULTIPROC_ENV, exposition, mark_process_dead
from noctis.settings import Settings

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0


class Siblings:
    """The other SCP processes beside this one on the port: spawned (so none inherits a lock,
    a socket or a database connection), restarted when one dies, drained on shutdown.
    ``run_tasks``: each runs the archive's tasks in-process (`noctis serve`)."""

    def __init__(
        self, settings: Settings, count: int, listener: socket.socket, *, run_tasks: bool = False
    ) -> None:
        self.settings = settings
        self.count = count
        self.listener = listener  # the listening socket every SCP process accepts from
        self.run_tasks = run_tasks
        self.metrics_dir: Path | None = None  # set by a supervisor that adds up their metrics
        self._context = multiprocessing.get_context("spawn")
        self._level = logging.getLogger().getEffectiveLevel()
        self._listening: dict[int, Any] = {}  # per sibling: set once its socket accepts
        self._processes: dict[int, BaseProcess] = {}
        self._stopping = False

    def start(self) -> Siblings:
        for index in range(1, self.count + 1):
            self._processes[index] = self._start(index)
        return self

    def _start(self, index: int) -> BaseProcess:
        self._listening[index] = self._context.Event()
        process = self._context.Process(
            target=serve_child,
            args=(
                self.settings,
                self._level,
                self._listening[index],
                self.run_tasks,
                self.listener,
            ),
            name=f"noctis-scp-{index}",
            daemon=False,
        )
        process.start()
        return process

    def serving(self) -> int:
        """How many are alive and accepting."""
        return sum(
            process.is_alive() and self._listening[index].is_set()
            for index, process in self._processes.items()
        )

    def restart_dead(self) -> None:
        for index, process in self._processes.items():
            if process.is_alive() or self._stopping:
                continue
            log.error("SCP process %s exited with %s; restarting", process.pid, process.exitcode)
            self._forget(process)
            time.sleep(RESTART_DELAY)
            self._processes[index] = self._start(index)

    def terminate(self) -> None:
        """SIGTERM: each stops accepting and drains its own associations."""
        self._stopping = True
        for process in self._processes.values():
            process.terminate()

    def wait(self) -> None:
        for process in self._processes.values():
            process.join(self.settings.scp_drain_seconds + 5)
            if process.is_alive():
                process.kill()
                process.join(5)
            self._forget(process)

    def _forget(self, process: BaseProcess) -> None:
        if process.pid is not None and self.metrics_dir is not None:
            mark_process_dead(process.pid, str(self.metrics_dir))


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
    listener = listening_socket(settings.scp_host, settings.scp_port)
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


def serve_child(
    settings: Settings, log_level: int, listening: Any, run_tasks: bool, listener: socket.socket
) -> None:
    """One SCP process accepting from the listening socket its siblings accept from."""
    from noctis.scp.server import Scp, stop_on_signals

    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    stopping = stop_on_signals()
    runtime = Runtime.open(settings)
    if run_tasks and isinstance(runtime.queue, InProcessQueue):
        from noctis.worker.inprocess import register_tasks

        register_tasks(runtime)
    try:
        scp = Scp(runtime, listener=listener).start()
        heap.settle()
        listening.set()
        while not stopping.wait(0.5):
            pass
        scp.stop()
        runtime.drain_tasks()
    finally:
        runtime.close()


def _metrics_dir() -> tuple[Path, bool]:
    named = os.environ.get(MULTIPROC_ENV)
    if named:
        directory = Path(named)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):  # samples of a previous run would add up
            stale.unlink()
        return directory, False
    return Path(tempfile.mkdtemp(prefix="noctis-scp-metrics-")), True
