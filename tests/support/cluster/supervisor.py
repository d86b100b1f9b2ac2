"""The process that owns the cluster: ``python -m support.cluster.supervisor STATE_DIR``.

It starts the components in order, each once the one before is ready, and then stays: as their
parent (they die with it) and as the child subreaper of everything they leave behind (containerd's
shims double-fork; this machine's PID 1 reaps nobody). It reports in ``run/supervisor.json``
(phase ``starting``, ``running``, ``failed`` with the error, ``stopping``) and stops everything in
reverse order on SIGTERM. ``support.cluster.cluster`` starts it detached and waits on that file.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from support.cluster import addons, images
from support.cluster.components import (
    ClusterFiles,
    ComponentSpec,
    admin_client,
    component_specs,
)
from support.cluster.layout import ClusterBinaries, Layout
from support.kube import Component, TestbedError, wait_healthy

PR_SET_CHILD_SUBREAPER = 36
POLL_SECONDS = 0.5


class StopRequested(Exception):
    """SIGTERM while the components were still starting."""


class Supervisor:
    def __init__(self, layout: Layout, pause_image: str) -> None:
        self.layout = layout
        self.pause_image = pause_image
        self.components: list[Component] = []
        self.stopping = False
        self.status: dict[str, Any] = {"pid": os.getpid(), "phase": "starting", "components": {}}

    # -- reporting ----------------------------------------------------------------------------

    def report(self, **changes: Any) -> None:
        self.status.update(changes)
        self.status["components"] = {
            c.name: {
                "pid": c.process.pid,
                "running": c.process.poll() is None,
                "exit_code": c.process.poll(),
            }
            for c in self.components
        }
        path = self.layout.supervisor_status
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(self.status, indent=2))
        partial.replace(path)

    # -- lifecycle ----------------------------------------------------------------------------

    def run(self) -> int:
        binaries = ClusterBinaries.from_cache()
        files = ClusterFiles.write(self.layout, self.pause_image)
        try:
            for spec in component_specs(self.layout, binaries, files):
                if self.stopping:
                    break
                self.start(spec)
                self.after(spec.name, binaries)
            if not self.stopping:
                self.report(phase="running")
            while not self.stopping:
                self.reap_orphans()
                self.check_components()
                time.sleep(POLL_SECONDS)
        except StopRequested:
            pass
        except Exception as error:
            self.report(phase="failed", error=_describe(error))
            self.stop_all()
            return 1
        self.stop_all()
        return 0

    def start(self, spec: ComponentSpec) -> None:
        began = time.monotonic()
        component = Component.start(spec.name, spec.argv, self.layout.log(spec.name), spec.env)
        self.components.append(component)
        (self.layout.run / f"{spec.name}.pid").write_text(str(component.process.pid))
        self.report(starting=spec.name)
        wait_healthy(component, spec.ready, spec.timeout)
        self.status.setdefault("ready_seconds", {})[spec.name] = round(time.monotonic() - began, 2)
        self.report()

    def after(self, name: str, binaries: ClusterBinaries) -> None:
        """What must happen between two components."""
        if name == "containerd":
            # Images first, so that no pod ever waits on one (they are never pulled).
            images.import_archives(self.layout)
        elif name == "kube-apiserver":
            self.apply(binaries, addons.rbac())
        elif name == "metrics-server":
            self.apply(binaries, addons.metrics_api(self.layout.pki / "ca.crt"))

    def apply(self, binaries: ClusterBinaries, objects: list[dict[str, Any]]) -> None:
        admin = admin_client(self.layout, binaries)
        listed = {"apiVersion": "v1", "kind": "List", "items": objects}
        admin.kubectl("apply", "-f", "-", input=json.dumps(listed))

    def check_components(self) -> None:
        exited = [c.name for c in self.components if c.process.poll() is not None]
        if exited and self.status.get("phase") == "running":
            self.report(phase="degraded", error=f"exited: {', '.join(exited)}")

    def reap_orphans(self) -> None:
        """Wait for the orphans we inherited as subreaper (never for our own components)."""
        ours = {c.process.pid for c in self.components}
        for pid in _zombie_children():
            if pid not in ours:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)

    def stop_all(self) -> None:
        self.report(phase="stopping")
        while self.components:
            component = self.components.pop()
            component.stop(timeout=20)
            with contextlib.suppress(FileNotFoundError):
                (self.layout.run / f"{component.name}.pid").unlink()
            self.reap_orphans()
        self.report(phase="stopped")

    def request_stop(self, signum: int, _frame: object) -> None:
        self.stopping = True
        if self.status["phase"] == "starting":
            raise StopRequested(signal.Signals(signum).name)


def _zombie_children() -> list[int]:
    me = str(os.getpid())
    zombies = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state == "Z" and ppid == me:
            zombies.append(int(proc.name))
    return zombies


def _describe(error: BaseException) -> str:
    if isinstance(error, TestbedError):
        return str(error)
    return "".join(traceback.format_exception(error)).strip()


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m support.cluster.supervisor STATE_DIR PAUSE_IMAGE", file=sys.stderr)
        return 2
    layout = Layout(Path(argv[1]))
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)
    supervisor = Supervisor(layout, argv[2])
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    layout.run.mkdir(parents=True, exist_ok=True)
    layout.supervisor_pid.write_text(str(os.getpid()))
    try:
        return supervisor.run()
    finally:
        with contextlib.suppress(FileNotFoundError):
            layout.supervisor_pid.unlink()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
