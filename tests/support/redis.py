"""A real Redis for tests: Debian's redis-server on loopback, nothing persisted.

    server = RedisServer.start()
    server.url                         # redis://127.0.0.1:PORT/0
    with server.offline(): ...         # down inside the block, back (empty) after it
    server.stop()                      # process stopped, temp dir removed

Redis runs as whoever runs the tests, root included.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from support import README_HINT, LocalServer, ServiceError, spawn, wait_started
from support.ports import LOOPBACK, free_port

STARTUP_TIMEOUT = 30.0


class RedisServer(LocalServer):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.log_path = root / "redis.log"
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls) -> RedisServer:
        root = Path(tempfile.mkdtemp(prefix="noctis-redis-"))
        server = cls(root)
        with server.removed_on_failure():
            server.up()
        return server

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def up(self) -> None:
        """Start redis-server (again) on the same port; returns when it answers PING."""
        if self.running:
            return
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError(f"redis-server is not installed. {README_HINT}")
        command = [
            binary,
            "--port", str(self.port),
            "--bind", LOOPBACK,
            "--save", "",  # no RDB snapshots
            "--appendonly", "no",
            "--dir", str(self.root),
            "--daemonize", "no",
            "--logfile", "",  # to stdout, i.e. our log file
        ]  # fmt: skip
        self._process = spawn(command, log=self.log_path)
        wait_started(
            self._answers_ping,
            what=f"redis-server on {LOOPBACK}:{self.port}",
            process=self._process,
            log=self.log_path,
            timeout=STARTUP_TIMEOUT,
        )

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False
