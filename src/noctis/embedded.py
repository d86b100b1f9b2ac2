"""`noctis serve`: the whole archive in one process on embedded defaults.

SQLite index and filesystem objects under the data directory, tasks in-process, the DICOM
SCP on a background thread and the web side (DICOMweb, REST, login, viewer) in the
foreground under uvicorn, which handles SIGTERM/Ctrl-C; then open associations finish.
Like the CLI, this is a composition root: it may import the process packages.
"""

from __future__ import annotations

import logging

from rich.console import Console

from noctis.archive import Archive
from noctis.index.facilities import (
    ANY_AE,
    DEFAULT_FACILITY,
    LOOPBACK_CIDRS,
    ensure_default_facility,
)
from noctis.index.migrate import upgrade
from noctis.queue import InProcessQueue
from noctis.settings import Settings

log = logging.getLogger(__name__)


def prepare(settings: Settings) -> Archive:
    """Create the data directory, migrate the index, and open the archive."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url())
    archive = Archive.open(settings, queue=InProcessQueue())
    if settings.embedded:
        with archive.sessions.begin() as session:
            ensure_default_facility(session)
    return archive


def serve(settings: Settings) -> None:
    import uvicorn

    from noctis.api.app import create_app
    from noctis.api.auth import ensure_first_admin
    from noctis.api.viewer import installed_viewer_version
    from noctis.scp.server import Scp
    from noctis.worker.inprocess import register_tasks

    console = Console(stderr=True)
    archive = prepare(settings)
    register_tasks(archive)
    admin = ensure_first_admin(archive)
    if settings.scp_processes > 1:
        # Its tasks and metrics live in this one process; `noctis scp` runs several.
        log.warning(
            "noctis serve runs one SCP process; NOCTIS_SCP_PROCESSES=%d applies to `noctis scp`",
            settings.scp_processes,
        )
    scp = Scp(archive).start()
    app = create_app(settings, archive)
    _announce(console, settings, scp.port, admin, installed_viewer_version(settings))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.api_host,
            port=settings.api_port,
            log_level="warning",
            access_log=False,
        )
    )
    try:
        server.run()
    finally:
        console.print("stopping: no new associations; letting open ones finish")
        scp.stop()
        archive.drain_tasks()
        archive.close()


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
