"""Several SCP processes on one port: ``noctis scp`` and ``noctis serve`` with
``scp_processes > 1``. They accept from one listening socket, made by the first process and
passed to each (`noctis.scp.listener.listening_socket`), so a busy process leaves the next
association to an idle one. `Siblings` starts, restarts and drains the others, each running
`serve_child`; ``noctis serve`` keeps its web side, its tasks and SCP number 0 in its own
process and hands the siblings a function that registers the tasks of what each stores
(``register_tasks``, from the composition root: the SCP never imports the worker).
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from noctis.core import heap
from noctis.core.queue import InProcessQueue
from noctis.core.runtime import Runtime
from noctis.scp.lifecycle import stop_on_signals
from noctis.scp.listener import SharedListener
from noctis.scp.metrics import mark_process_dead
from noctis.scp.server import Scp
from noctis.settings import Settings

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0

# Binds the archive's task functions to a runtime's in-process queue (the worker's, injected).
TaskRegistration = Callable[[Runtime], None]


class Siblings:
    """The other SCP processes beside this one on the port: spawned (so none inherits a lock,
    a socket or a database connection), restarted when one dies, drained on shutdown.
    ``register_tasks``: each runs the archive's tasks in-process, registered by this function
    (`noctis serve`); it is pickled by name, so a module-level function."""

    def __init__(
        self,
        settings: Settings,
        count: int,
        listener: SharedListener,
        *,
        register_tasks: TaskRegistration | None = None,
    ) -> None:
        self.settings = settings
        self.count = count
        self.listener = listener  # the listening socket every SCP process accepts from (slot 0)
        self.register_tasks = register_tasks
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
                self.register_tasks,
                self.listener.for_slot(index),
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
            self.listener.not_accepting(index)  # its count died with it
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


def serve_child(
    settings: Settings,
    log_level: int,
    listening: Any,
    register_tasks: TaskRegistration | None,
    listener: SharedListener,
) -> None:
    """One SCP process accepting from the listening socket its siblings accept from."""
    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    stopping = stop_on_signals()
    runtime = Runtime.open(settings)
    if register_tasks is not None and isinstance(runtime.queue, InProcessQueue):
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
