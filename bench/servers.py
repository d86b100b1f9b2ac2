"""The servers under test: dcmtk's storescp, Orthanc (SQLite or PostgreSQL index) and Noctis.

Each target starts on free loopback ports in a temp dir of its own, with its backing services
(a fresh PostgreSQL, SeaweedFS), and `stop()` stops everything it started, in reverse order.
Every server keeps its own defaults except for the settings written here, so the comparison is
"as installed", not tuned one way.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx

from bench import backing
from bench.noctis import NoctisTarget
from bench.procs import (
    LOOPBACK,
    BenchError,
    dcmtk_environment,
    dcmtk_tool,
    free_ports,
    is_listening,
)
from bench.target import CALLING_AE, Target


class StoreScp(Target):
    """dcmtk's storescp: writes each instance to a file and indexes nothing (the ceiling)."""

    name = "storescp"
    label = "dcmtk storescp"
    ae_title = "STORESCP"

    def start(self) -> None:
        (self.dicom_port,) = free_ports(1)
        self.output = self.root / "received"
        self.output.mkdir(parents=True)
        argv = [dcmtk_tool("storescp"), "-aet", self.ae_title, "+xa", "-od", str(self.output)]
        self.service = self._service(
            "storescp", [*argv, str(self.dicom_port)], env=dcmtk_environment()
        )
        self.service.wait_ready(lambda: is_listening(self.dicom_port), timeout=20)
        self.details["version"] = _first_line([dcmtk_tool("storescp"), "--version"])

    def server_pids(self) -> list[int]:
        return [self.service.pid]

    def count_instances(self) -> int:
        return sum(1 for p in self.output.rglob("*") if p.is_file())


class Orthanc(Target):
    """Orthanc with its default SQLite index, or with the PostgreSQL index plugin."""

    ae_title = "ORTHANC"
    queryable = True

    def __init__(
        self, root: Path, *, postgres: bool, pg_durable: bool = True, dicomweb: bool = True
    ) -> None:
        super().__init__(root)
        self.postgres = postgres
        self.dicomweb = dicomweb  # load the DICOMweb plugin (only when the web suite runs)
        self.pg_durable = pg_durable
        self._pg: Any = None
        self.name = "orthanc-pg" if postgres else "orthanc-sqlite"
        self.label = "Orthanc PostgreSQL" if postgres else "Orthanc SQLite"

    def start(self) -> None:
        self.dicom_port, self.http_port = free_ports(2)
        config = self._config()
        plugins: list[str] = []
        if self.dicomweb:
            plugins.append(_orthanc_plugin("orthanc-dicomweb", "libOrthancDicomWeb.so"))
        if self.postgres:
            pg = self._pg = backing.start_postgres(durable=self.pg_durable)
            self.on_stop(pg.stop)
            pg.create_database("orthanc")
            self.details["postgresql"] = backing.postgres_settings(pg)
            config["PostgreSQL"] = {
                "EnableIndex": True,
                "EnableStorage": False,  # DICOM files stay on the filesystem, as with SQLite
                "Host": LOOPBACK,
                "Port": pg.port,
                "Database": "orthanc",
                "Username": backing.postgres_superuser(),
                "Password": pg.password,
                "Lock": False,
                "EnableSsl": False,
            }
            plugins.append(_orthanc_plugin("orthanc-postgresql", "libOrthancPostgreSQLIndex.so"))
        if self.dicomweb:
            config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "Host": LOOPBACK}
        config["Plugins"] = plugins
        path = self.root / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        self.service = self._service(
            "orthanc",
            [shutil.which("Orthanc") or "/usr/sbin/Orthanc", str(path)],
            env=dcmtk_environment(),
            cwd=self.root,
        )
        self.service.wait_ready(self._ready, timeout=90)
        system = self._get("/system").json()
        plugins_loaded = self._get("/plugins").json()
        self.details.update(
            version=system.get("Version"),
            database_backend=system.get("DatabaseBackendPlugin"),
            plugins={
                p: self._get(f"/plugins/{p}").json().get("Version")
                for p in plugins_loaded
                if not p.endswith(".js")  # explorer.js is a script, not a plugin
            },
        )
        if self.postgres and not system.get("DatabaseBackendPlugin"):
            raise BenchError("Orthanc started without its PostgreSQL index plugin")

    def _config(self) -> dict[str, Any]:
        storage = self.root / "storage"
        storage.mkdir(parents=True)
        return {
            "Name": f"bench-{self.name}",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            # C-FIND is refused to unknown AEs since 1.9; the benchmark's SCU is a known modality.
            "DicomModalities": {"bench": [CALLING_AE, LOOPBACK, 104]},
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "SaveJobs": False,
        }

    def _ready(self) -> bool:
        if not is_listening(self.dicom_port):
            return False
        try:
            return self._get("/system").status_code == 200
        except httpx.HTTPError:
            return False

    def _get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://{LOOPBACK}:{self.http_port}{path}", timeout=30)

    def server_pids(self) -> list[int]:
        return [self.service.pid]

    def backing_pids(self) -> dict[str, list[int]]:
        return {"database": backing.server_pids(self._pg)} if self._pg is not None else {}

    def count_instances(self) -> int:
        return int(self._get("/statistics").json()["CountInstances"])

    def dicomweb_root(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}/dicom-web"


def _orthanc_plugin(package: str, library: str) -> str:
    """Where a Debian Orthanc plugin package installed `library` (from `dpkg -L`)."""
    try:
        listing = subprocess.run(
            ["dpkg", "-L", package], capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BenchError(
            f"Debian package {package} is not installed: apt-get install {package}"
        ) from exc
    found = [p for p in listing if p.endswith("/" + library)]
    if not found:
        raise BenchError(f"{package} does not contain {library}")
    return sorted(found)[0]


def _first_line(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if lines else ""


TARGET_NAMES = (
    "storescp",
    "orthanc-sqlite",
    "orthanc-pg",
    "noctis-embedded",
    "noctis-production",
)


def make_target(
    name: str, root: Path, *, pg_durable: bool, web: bool = True, s3: str = "seaweedfs"
) -> Target:
    """The target called `name`; `web`: it will also serve the DICOMweb benchmark; `s3`: the
    S3 server of Noctis in production (`bench.backing.S3_SERVERS`)."""
    root.mkdir(parents=True, exist_ok=True)
    if name == "storescp":
        return StoreScp(root)
    if name == "orthanc-sqlite":
        return Orthanc(root, postgres=False, dicomweb=web)
    if name == "orthanc-pg":
        return Orthanc(root, postgres=True, pg_durable=pg_durable, dicomweb=web)
    if name == "noctis-embedded":
        return NoctisTarget(root, production=False)
    if name == "noctis-production":
        return NoctisTarget(root, production=True, pg_durable=pg_durable, s3=s3)
    raise BenchError(f"unknown target {name!r}; choose from {', '.join(TARGET_NAMES)}")
