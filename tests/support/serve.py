"""A real `noctis serve` on embedded settings in a test's directory, on loopback ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from support import terminate, wait, wait_started
from support.logs import ServerLogs
from support.ports import LOOPBACK, free_ports

ADMIN_PASSWORD = "a-long-enough-password"


class EmbeddedServe:
    """`noctis serve` with its data in ``tmp_path / "data"``: SCP, API and health on free
    loopback ports, no viewer, an ``admin`` with `ADMIN_PASSWORD`; ``env`` adds settings.
    `start` waits until the SCP listens and the web side answers; it may be started again
    after `kill` (a crash) or `stop`."""

    def __init__(
        self, tmp_path: Path, server_logs: ServerLogs, env: dict[str, str] | None = None
    ) -> None:
        self.data_dir = tmp_path / "data"
        self.port, self.health_port, self.api_port = free_ports(3)
        self.env = {
            **os.environ,
            "NOCTIS_MODE": "embedded",
            "NOCTIS_DATA_DIR": str(self.data_dir),
            "NOCTIS_SCP_HOST": LOOPBACK,
            "NOCTIS_SCP_PORT": str(self.port),
            "NOCTIS_HEALTH_HOST": LOOPBACK,
            "NOCTIS_HEALTH_PORT": str(self.health_port),
            "NOCTIS_SCP_PROCESSES": "1",
            "NOCTIS_API_HOST": LOOPBACK,
            "NOCTIS_API_PORT": str(self.api_port),
            "NOCTIS_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "NOCTIS_VIEWER_DIR": str(tmp_path / "no-viewer"),
            **(env or {}),
        }
        self.log = tmp_path / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        server_logs.watch("noctis serve", self.log)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    def start(self) -> EmbeddedServe:
        self.starts += 1
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "noctis.cli", "serve"], env=self.env, stdout=out, stderr=out
            )
        log = self.log

        def started() -> bool:
            return log.read_text(errors="replace").count("listening on") >= self.starts

        wait_started(started, what="noctis serve", process=self.process, log=log, timeout=60)
        wait.until(self._answers, timeout=30, what="noctis serve's web side")
        return self

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            terminate(self.process, timeout=30)

    def __enter__(self) -> EmbeddedServe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
