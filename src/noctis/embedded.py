"""`noctis serve`: the whole archive in one process on embedded defaults.

SQLite index and filesystem objects under the data directory, tasks in-process, the DICOM
SCP on a background thread and the web side (DICOMweb, REST, login, viewer) in the
foreground under uvicorn, which handles SIGTERM/Ctrl-C; then open associations finish. With
``NOCTIS_SCP_PROCESSES`` above 1, that many SCP processes share the port (one Python process
stores only as fast as its GIL allows; parallel senders use every core); unset, `noctis serve`
runs two on a machine with two CPUs or more (`serve_scp_processes`).
Like the CLI, this is a composition root: it may import the process packages.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from noctis.core import heap
from noctis.core.facilities import (
    ANY_AE,
    DEFAULT_FACILITY,
    LOOPBACK_CIDRS,
    ensure_default_facility,
)
from noctis.core.queue import InProcessQueue
from noctis.core.runtime import Runtime
from noctis.index.migrate import upgrade
from noctis.settings import Settings

if TYPE_CHECKING:
    from noctis.scp.supervisor import Siblings

log = logging.getLogger(__name__)


def serve_scp_processes(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """`noctis serve`'s SCP processes when NOCTIS_SCP_PROCESSES is unset: two where this
    process may use two CPUs or more (four CT associations stored 1.1-1.3x as fast as in
    one process, for ~130 MB more resident memory), else one."""
    return 2 if usable_cpus(cgroup) >= 2 else 1


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> float:
    """The CPUs this process may run on, capped by its cgroup's CPU quota (a container
    limited to one CPU sees every CPU of its host)."""
    cpus = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0)
    cpus = cpus or float(os.cpu_count() or 1)
    quota = _cgroup_cpu_quota(cgroup)
    return min(cpus, quota) if quota is not None else cpus


def _cgroup_cpu_quota(root: Path) -> float | None:
    """CPUs the cgroup's quota allows (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` over
    ``cpu.cfs_period_us``); None without a quota or where none can be read."""
    try:
        limit, _, period = (root / "cpu.max").read_text().partition(" ")
        return None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def prepare(settings: Settings) -> Runtime:
    """Create the data directory, migrate the index, and open the archive."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url())
    runtime = Runtime.open(settings, queue=InProcessQueue())
    if settings.embedded:
        with runtime.sessions.begin() as session:
            ensure_default_facility(session)
    return runtime


def serve(settings: Settings) -> None:
    import uvicorn

    from noctis.api.app import create_app
    from noctis.api.auth.setup import configured_admin_password
    from noctis.api.server import uvicorn_config
    from noctis.api.viewer import installed_viewer_version
    from noctis.core.accounts import ensure_first_admin
    from noctis.scp.lifecycle import clean_spool, stop_on_signals
    from noctis.scp.server import Scp
    from noctis.worker.inprocess import register_tasks, start_periodic

    console = Console(stderr=True)
    runtime = prepare(settings)
    clean_spool(settings.resolved_spool_dir())  # before any SCP process receives into it
    register_tasks(runtime)
    periodic = start_periodic(runtime)
    admin = ensure_first_admin(runtime, configured_admin_password())
    siblings = _start_siblings(settings, register_tasks)
    scp = Scp(runtime, listener=siblings.listener if siblings is not None else None).start()
    app = create_app(settings, runtime)
    _announce(console, settings, scp.port, admin, installed_viewer_version(settings))
    server = uvicorn.Server(
        uvicorn_config(
            app, settings.api_host, settings.api_port, log_level="warning", access_log=False
        )
    )
    # uvicorn handles SIGTERM/Ctrl-C while it runs, then raises the signal again: with these
    # handlers (restored by uvicorn) that only records it, so what follows still runs.
    stop_on_signals()
    heap.settle()
    try:
        server.run()
    finally:
        console.print("stopping: no new associations; letting open ones finish")
        if siblings is not None:
            siblings.terminate()
        scp.stop()
        if siblings is not None:
            siblings.wait()
        periodic.stop()
        runtime.drain_tasks()
        runtime.close()


def _start_siblings(
    settings: Settings, register_tasks: Callable[[Runtime], None]
) -> Siblings | None:
    """With ``scp_processes > 1``, the other SCP processes on the port (each runs the tasks
    of what it stores, registered by ``register_tasks``), watched by a thread that restarts
    one that dies."""
    from noctis.scp.listener import shared_listener
    from noctis.scp.supervisor import Siblings

    if settings.scp_processes < 2:
        return None
    listener = shared_listener(settings.scp_host, settings.scp_port, settings.scp_processes)
    siblings = Siblings(
        settings, settings.scp_processes - 1, listener, register_tasks=register_tasks
    ).start()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            siblings.restart_dead()

    threading.Thread(target=watch, name="noctis-scp-siblings", daemon=True).start()
    return siblings


def _announce(
    console: Console,
    settings: Settings,
    scp_port: int,
    admin: tuple[str, str | None],
    viewer_version: str | None,
) -> None:
    host = "127.0.0.1" if settings.scp_host in ("0.0.0.0", "::") else settings.scp_host
    web = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::") else settings.api_host
    console.print(f"[bold]Noctis[/bold] on embedded defaults, data in {settings.data_dir}")
    console.print(f"  DICOM   AE title [bold]{settings.ae_title}[/bold] on {host}:{scp_port}")
    processes = settings.scp_processes
    console.print(
        f"          {processes} SCP process{'es' if processes > 1 else ''} on the port "
        "(NOCTIS_SCP_PROCESSES)"
    )
    console.print(
        f"          e.g. TCP_NODELAY=1 storescu -aec {settings.ae_title} {host} {scp_port} "
        "image.dcm    or    noctis upload --port "
        f"{scp_port} DIR"
    )
    console.print(
        f"  Facility '{DEFAULT_FACILITY}' accepts ANY calling AE title ({ANY_AE}) from "
        f"{' and '.join(LOOPBACK_CIDRS)} only; register other modalities with "
        "`noctis facility apply -f facility.yaml`."
    )
    console.print(
        f"  Web     http://{web}:{settings.api_port}/  (DICOMweb at /dicom-web, API /docs)"
    )
    if viewer_version is None:
        console.print("          the OHIF viewer is not installed: run scripts/fetch-viewer.sh")
    username, password = admin
    if password:
        console.print(
            f"  Login   user [bold]{username}[/bold], password [bold]{password}[/bold] "
            "(shown once: change it with `noctis user passwd admin`)"
        )
    else:
        console.print(f"  Login   as an existing user (the first administrator is '{username}')")
