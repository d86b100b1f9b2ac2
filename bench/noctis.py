"""Noctis as a benchmark target, started through its own CLI like a user would.

- embedded: `noctis serve` (SCP, web API and in-process tasks in one process; SQLite index and
  filesystem objects in the data dir, the loopback-only default facility), with its own
  number of SCP processes (two on two CPUs or more); the case with the other number restarts
  it with NOCTIS_SCP_PROCESSES on the same data dir;
- production: PostgreSQL + S3 (SeaweedFS), `noctis migrate`, `noctis facility apply -f`, then
  `noctis scp` and `noctis api` as separate processes, like the pods on Kubernetes. No Celery
  broker is configured, so the SCP runs no background tasks (a worker would run elsewhere).

Peak RSS and the server's CPU are measured on the receiving process (serve, which includes the
web API and the in-process tasks; or scp) and every process it started (the other SCP
processes); in production the CPU of PostgreSQL and of the S3 server is measured apart.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import sys
import warnings
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench import backing
from bench.procs import (
    LOOPBACK,
    BenchError,
    Service,
    free_ports,
    log_tail,
    run_tool,
    test_support,
)
from bench.target import CALLING_AE, Target
from noctis.embedded import serve_scp_processes

BUCKET = "noctis-bench"
FACILITY = "bench"  # production: the facility the benchmark registers
WEB_USER = "bench"
NOCTIS = [sys.executable, "-m", "noctis.cli"]
LISTENING = "listening on"  # what each SCP process logs once it accepts associations


class NoctisTarget(Target):
    ae_title = "NOCTIS"
    queryable = True

    def __init__(
        self, root: Path, *, production: bool, pg_durable: bool = True, s3: str = "seaweedfs"
    ) -> None:
        super().__init__(root)
        self.production = production
        self.pg_durable = pg_durable
        self.s3 = s3
        self.name = "noctis-production" if production else "noctis-embedded"
        self.label = f"Noctis PostgreSQL+S3 ({s3})" if production else "Noctis embedded"
        # What the receiving command runs unless told: `noctis serve` two SCP processes on two
        # CPUs or more, `noctis scp` one (a pod; more pods for more).
        self.default_scp_processes = 1 if production else serve_scp_processes()
        self.scp_processes = self.default_scp_processes
        self.receiver = ""  # "serve" or "scp": the command of the receiving process
        self.scp: Service | None = None
        self.api: Service | None = None
        self._token: str | None = None
        self._pg: Any = None
        self._s3: Any = None

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self.dicom_port, self.health_port, self.api_port = free_ports(3)
        self.data_dir = self.root / "data"
        self.data_dir.mkdir(parents=True)
        self.admin_password = secrets.token_urlsafe(16)
        self.env = self._environment()
        if self.production:
            self._start_backing()
        self._cli("migrate")
        if self.production:
            self._apply_facility()
        if self.production:
            self._start_receiver("scp")
            self.api = self._service("noctis-api", [*NOCTIS, "api"], env=self.env, cwd=self.root)
            self.api.wait_ready(self._api_answers, timeout=120)
        else:
            self._start_receiver("serve")
        self.details.update(
            version=_noctis_version(),
            processes="noctis scp + noctis api" if self.production else "noctis serve",
        )

    def set_scp_processes(self, count: int) -> bool:
        """Restart the receiver with NOCTIS_SCP_PROCESSES=count, on the same data."""
        if self.scp is not None:
            self.scp.stop()
        self.scp_processes = count
        self.env["NOCTIS_SCP_PROCESSES"] = str(count)
        self._start_receiver("scp" if self.production else "serve")
        return True

    def other_scp_processes(self) -> int:
        return 1 if self.default_scp_processes > 1 else 2

    def restore(self) -> None:
        """Back to the configuration the web benchmark runs against: the default."""
        if self.scp_processes != self.default_scp_processes:
            self.set_scp_processes(self.default_scp_processes)

    def _start_backing(self) -> None:
        self._pg = backing.start_postgres(durable=self.pg_durable)
        self.on_stop(self._pg.stop)
        self.details["postgresql"] = backing.postgres_settings(self._pg)
        self._s3 = backing.start_s3(BUCKET, self.s3)
        self.details["s3"] = self.s3
        self.on_stop(self._s3.stop)
        self.env.update(
            NOCTIS_DATABASE_URL=self._pg.url,
            NOCTIS_STORAGE_BACKEND="s3",
            NOCTIS_S3_ENDPOINT=self._s3.endpoint,
            NOCTIS_S3_ACCESS_KEY=self._s3.access_key,
            NOCTIS_S3_SECRET_KEY=self._s3.secret_key,
            NOCTIS_S3_BUCKET=BUCKET,
            NOCTIS_S3_SECURE="false",
        )

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOCTIS_")}
        env.update(
            NOCTIS_MODE="production" if self.production else "embedded",
            NOCTIS_DATA_DIR=str(self.data_dir),
            NOCTIS_AE_TITLE=self.ae_title,
            NOCTIS_SCP_HOST=LOOPBACK,
            NOCTIS_SCP_PORT=str(self.dicom_port),
            NOCTIS_SCP_PROCESSES=str(self.scp_processes),
            NOCTIS_HEALTH_HOST=LOOPBACK,
            NOCTIS_HEALTH_PORT=str(self.health_port),
            NOCTIS_API_HOST=LOOPBACK,
            NOCTIS_API_PORT=str(self.api_port),
            NOCTIS_SECRET_KEY=secrets.token_hex(32),
            NOCTIS_ADMIN_PASSWORD=self.admin_password,
            NOCTIS_VIEWER_DIR=str(self.root / "no-viewer"),
        )
        return env

    def _cli(self, *args: str) -> str:
        result = run_tool([*NOCTIS, *args], env=self.env, timeout=300)
        if result.returncode != 0:
            raise BenchError(
                f"`noctis {' '.join(args)}` failed ({result.returncode}):\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )
        return result.stdout + result.stderr

    def _apply_facility(self) -> None:
        document = {
            "apiVersion": "pacs.noctis.io/v1alpha1",
            "kind": "Facility",
            "metadata": {"name": FACILITY},
            "spec": {
                "displayName": "Benchmark",
                "applicationEntities": [
                    {"aeTitle": CALLING_AE, "allowedCIDRs": ["127.0.0.0/8"]},
                ],
            },
        }
        path = self.root / "facility.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        self._cli("facility", "apply", "-f", str(path))

    def _start_receiver(self, command: str) -> None:
        """`noctis serve` or `noctis scp`; returns when every SCP process listens."""
        self.receiver = command
        name = f"noctis-{command}-{self.scp_processes}p"
        self.scp = self._service(name, [*NOCTIS, command], env=self.env, cwd=self.root)
        self.scp.wait_ready(self._scp_ready, timeout=120)

    def _scp_ready(self) -> bool:
        # Every SCP process must be accepting, or a case starts on fewer than asked for. No TCP
        # probe of the DICOM port: pynetdicom keeps a connection that never sends an
        # A-ASSOCIATE-RQ open until its ACSE timeout, which holds up the SCP's shutdown.
        listening = self.scp.log_since_start().count(LISTENING) if self.scp else 0
        if listening < self.scp_processes:
            return False
        if self.receiver == "serve":  # no health port: the web side answering means it is up
            return self._api_answers()
        try:
            url = f"http://{LOOPBACK}:{self.health_port}/readyz"
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _api_answers(self) -> bool:
        try:
            httpx.get(f"http://{LOOPBACK}:{self.api_port}/", timeout=2)
        except httpx.HTTPError:
            return False
        return True

    # --- what the benchmarks ask ----------------------------------------------------------

    def server_pids(self) -> list[int]:
        if self.scp is None:
            return []
        return [self.scp.pid]

    def web_pids(self) -> list[int]:
        """Production: `noctis api` (embedded, `serve` answers the web itself)."""
        return [self.api.pid] if self.api is not None and self.api.running else []

    def backing_pids(self) -> dict[str, list[int]]:
        """Production: PostgreSQL and the S3 server (not `noctis api`, idle during a store)."""
        if not self.production:
            return {}
        return {
            "database": backing.server_pids(self._pg),
            "object_store": backing.server_pids(self._s3),
        }

    def count_instances(self) -> int:
        """Instances both in the index and in the object store (the smaller of the two counts).

        An instance counts only if its index row and its object both exist: a server that
        acknowledged without storing one of them falls short of the expected count.
        """
        index = self.count_index_rows()
        objects = self.count_objects()
        self.details["last_count"] = {"index": index, "objects": objects}
        return min(index, objects)

    def count_index_rows(self) -> int:
        if self.production:
            with self._pg.connect("noctis") as conn:
                return int(conn.execute("SELECT count(*) FROM instance").fetchone()[0])
        with sqlite3.connect(self.data_dir / "index.sqlite3", timeout=30) as conn:
            return int(conn.execute("SELECT count(*) FROM instance").fetchone()[0])

    def count_objects(self) -> int:
        if self.production:
            return backing.count_objects(self._s3, BUCKET)
        objects = self.data_dir / "objects"
        return sum(1 for p in objects.rglob("*.dcm") if p.is_file())

    def dicomweb_root(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}/dicom-web"

    def http_headers(self) -> dict[str, str]:
        if self._token is None:
            self._token = self._issue_token()
        return {"Authorization": f"Bearer {self._token}"}

    def _issue_token(self) -> str:
        """An API token for a radiologist of the facility, through tests/support/web.py."""
        test_support()
        try:
            from noctis.core.runtime import Runtime
            from noctis.settings import Settings

            with warnings.catch_warnings():  # starlette's TestClient import warns; unused here
                warnings.simplefilter("ignore")
                from support.web import create_user, token_for
        except ImportError as exc:
            raise BenchError(f"cannot issue a Noctis API token: {exc}") from exc
        overrides = {k: v for k, v in self.env.items() if k.startswith("NOCTIS_")}
        saved = {k: os.environ.get(k) for k in overrides}
        os.environ.update(overrides)  # Settings reads the same environment as the servers
        try:
            runtime = Runtime.open(Settings())  # type: ignore[call-arg]  # from the environment
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        try:
            facility = FACILITY if self.production else "default"
            create_user(runtime, WEB_USER, "radiologist", facilities=[facility])
            return str(token_for(runtime, WEB_USER, name="bench"))
        finally:
            runtime.close()

    def logs(self) -> str:
        return "\n".join(log_tail(s.log_path) for s in (self.scp, self.api) if s is not None)


def _noctis_version() -> str:
    try:
        from importlib.metadata import version

        return version("noctis")
    except Exception:
        return "unknown"
