"""MinIO as the benchmark's S3 server, when `scripts/build-testbed.sh minio` has built it.

A 512 KiB PUT takes 5 ms on MinIO here against 7 ms on SeaweedFS `weed mini` (the test
suite's S3 server), and MinIO takes four PUTs at once 1.9 times as fast where weed mini
takes them no faster than one: measured with the minio client, before any Noctis code. The
benchmark compares archives, not S3 servers, so it uses the faster one when it is there and
says which (``--s3``). MinIO writes its objects with O_DIRECT and fdatasync: they are durable
when the PUT returns, like Orthanc's files and Noctis's embedded objects.

MinIO is AGPL-3.0 and is only built and run here, never shipped or committed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from minio import Minio

from bench.procs import LOOPBACK, BenchError, free_ports, test_support

REPO = Path(__file__).resolve().parent.parent
VERSIONS = REPO / "scripts" / "testbed-versions.env"
STARTUP_TIMEOUT = 60.0


def minio_binary() -> Path | None:
    """The MinIO server `scripts/build-testbed.sh minio` built, if it did."""
    version = _pinned_version()
    cache = Path(os.environ.get("NOCTIS_TESTBED_CACHE", Path.home() / ".cache/noctis-testbed"))
    binary = cache / f"minio-{version}" / "bin" / "minio"
    return binary if binary.is_file() else None


def _pinned_version() -> str:
    for line in VERSIONS.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MINIO_VERSION":
            return value.strip()
    raise BenchError(f"MINIO_VERSION is missing from {VERSIONS}")


class MinioServer:
    """One single-drive `minio server` on free loopback ports, in its own temp dir."""

    def __init__(self, binary: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="noctis-bench-minio-"))
        self.access_key = "noctis-bench"
        self.secret_key = secrets.token_hex(16)
        self.port, self._console_port = free_ports(2)
        self.endpoint = f"{LOOPBACK}:{self.port}"
        self.log_path = self.root / "minio.log"
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, binary: Path) -> MinioServer:
        server = cls(binary)
        try:
            server._up()
        except BaseException:
            server.stop()
            raise
        return server

    def client(self) -> Minio:
        test_support()
        from support.s3 import setup_client

        return setup_client(self.endpoint, self.access_key, self.secret_key)

    def _up(self) -> None:
        test_support()
        from support import spawn, wait_started

        env = {k: v for k, v in os.environ.items() if not k.startswith(("MINIO_", "AWS_"))}
        env |= {
            "MINIO_ROOT_USER": self.access_key,
            "MINIO_ROOT_PASSWORD": self.secret_key,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
        }
        self._process = spawn(
            [
                str(self._binary),
                "server",
                "--quiet",
                "--address",
                f"{LOOPBACK}:{self.port}",
                "--console-address",
                f"{LOOPBACK}:{self._console_port}",
                str(self.root / "data"),
            ],
            log=self.log_path,
            stop_signal=signal.SIGTERM,
            cwd=self.root,
            env=env,
        )
        client = self.client()
        wait_started(
            lambda: _answers(client),
            what=f"MinIO on {self.endpoint}",
            process=self._process,
            log=self.log_path,
            timeout=STARTUP_TIMEOUT,
        )

    def stop(self) -> None:
        if self._process is not None:
            test_support()
            from support import terminate

            terminate(self._process)
            self._process = None
        shutil.rmtree(self.root, ignore_errors=True)


def _answers(client: Minio) -> bool:
    try:
        client.list_buckets()
    except Exception:
        return False
    return True
