"""A real PostgreSQL server for tests: Debian's PostgreSQL 15, in a temp dir, on loopback.

    server = PostgresServer.start()
    url = server.create_database("test_ingest")   # a SQLAlchemy URL, one database per test
    with server.offline():                         # the server is down inside the block
        ...
    server.stop()                                  # process stopped, temp dir removed

PostgreSQL refuses to run as root, and CI runs tests as root: then initdb and postgres run as
the `postgres` system user, in a temp dir under /tmp (traversable by everyone) that it owns.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from support import README_HINT, LocalServer, ServiceError, spawn, wait_started
from support.ports import LOOPBACK, free_port

PG_BIN = Path(os.environ.get("NOCTIS_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
SYSTEM_USER = "postgres"  # who runs the server when the tests run as root
SUPERUSER = "noctis"  # the database role tests connect as; owns every test database
STARTUP_TIMEOUT = 60.0
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# Durability off (tests lose nothing that matters if the machine dies), loopback only.
_SERVER_SETTINGS = {
    "listen_addresses": LOOPBACK,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "log_min_messages": "warning",
}


class PostgresServer(LocalServer):
    """One postgres process with its own port, data dir and superuser password."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.log_path = root / "postgres.log"
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls) -> PostgresServer:
        """initdb a new cluster, start it, and create the database `noctis`."""
        _require_binaries()
        root = Path(tempfile.mkdtemp(prefix="noctis-pg-"))
        server = cls(root)
        with server.removed_on_failure():
            server._initdb()
            server.up()
            server.create_database("noctis")
        return server

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the database `noctis`."""
        return self.url_for("noctis")

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}:{self.password}@{LOOPBACK}:{self.port}/{database}"

    def connect(self, database: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        """A plain psycopg connection (autocommit), for set-up and assertions."""
        options: dict[str, Any] = {"autocommit": True, "connect_timeout": 5, **kwargs}
        return psycopg.connect(
            host=LOOPBACK,
            port=self.port,
            user=SUPERUSER,
            password=self.password,
            dbname=database,
            **options,
        )

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create an empty database (or a copy of `template`); its SQLAlchemy URL."""
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(_checked(name)))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(_checked(template)))
        with self.connect() as conn:
            conn.execute(statement)
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever still uses it (a test's leftover pool)."""
        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(_checked(name))
        )
        with self.connect() as conn:
            conn.execute(statement)

    def up(self) -> None:
        """Start the server (again) on the same port and data; returns when it accepts logins."""
        if self.running:
            return
        self._process = spawn(
            [str(PG_BIN / "postgres"), *self._server_args()],
            log=self.log_path,
            stop_signal=signal.SIGINT,  # "fast" shutdown; SIGTERM would wait for every client
            cwd=self.root,
            **_as_system_user(),
        )
        wait_started(
            self._accepts_logins,
            what=f"PostgreSQL on {LOOPBACK}:{self.port}",
            process=self._process,
            log=self.log_path,
            timeout=STARTUP_TIMEOUT,
        )

    def _initdb(self) -> None:
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.root, SYSTEM_USER, SYSTEM_USER)
            shutil.chown(password_file, SYSTEM_USER, SYSTEM_USER)
        command = [
            str(PG_BIN / "initdb"),
            f"--pgdata={self.data_dir}",
            f"--username={SUPERUSER}",
            f"--pwfile={password_file}",
            "--auth-local=trust",  # the socket lives in our 0700 temp dir
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, cwd=self.root, **_as_system_user()
            )
        finally:
            password_file.unlink(missing_ok=True)
        if result.returncode != 0:
            output = result.stdout + result.stderr
            raise ServiceError(f"initdb failed with status {result.returncode}:\n{output}")

    def _server_args(self) -> list[str]:
        settings = {
            **_SERVER_SETTINGS,
            "port": str(self.port),
            # The unix socket goes in our own dir, not /var/run/postgresql (which may not exist).
            "unix_socket_directories": str(self.root),
        }
        return ["-D", str(self.data_dir), *(f"--{k}={v}" for k, v in settings.items())]

    def _accepts_logins(self) -> bool:
        try:
            with self.connect(connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False


def _require_binaries() -> None:
    for name in ("initdb", "postgres"):
        if not (PG_BIN / name).is_file():
            raise ServiceError(f"PostgreSQL binary {PG_BIN / name} not found. {README_HINT}")


def _as_system_user() -> dict[str, Any]:
    """Popen arguments that drop root to the postgres system user (no-op for other users)."""
    if os.geteuid() != 0:
        return {}
    return {"user": SYSTEM_USER, "group": SYSTEM_USER, "extra_groups": []}


def _checked(name: str) -> str:
    if not _DATABASE_NAME.match(name):
        raise ValueError(f"database name must match {_DATABASE_NAME.pattern}: {name!r}")
    return name
