"""Fixtures shared by every test: real PostgreSQL, Redis and S3 servers, and object stores.

Servers start once per session, on free loopback ports, and only when a test asks for them.
A missing server binary fails the test with a message naming the command that installs it;
nothing is skipped. Tests that use a server are marked with it (`postgres`, `s3`, `redis`), so
`pytest -m "not s3"` deselects them.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from noctis.storage.filesystem import FilesystemStore
from noctis.storage.s3 import S3Store
from support.kube import ControlPlane, fresh_namespace, start_control_plane
from support.logs import ServerLogs
from support.postgres import PostgresServer
from support.redis import RedisServer
from support.s3 import SeaweedFS

Server = TypeVar("Server", PostgresServer, RedisServer, SeaweedFS)

# Fixture name -> marker, for tests that use the fixture directly or through another fixture.
_FIXTURE_MARKERS = {
    "postgres": "postgres",
    "pg_url": "postgres",
    "s3_server": "s3",
    "s3_store": "s3",
    "redis_server": "redis",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "redis: needs a Redis server (started by the tests)")
    config.addinivalue_line(
        "markers", "kube: needs the Kubernetes test bed (scripts/build-testbed.sh)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for name in set(getattr(item, "fixturenames", ())) & _FIXTURE_MARKERS.keys():
            item.add_marker(_FIXTURE_MARKERS[name])


def _serve(start: Callable[[], Server], what: str) -> Iterator[Server]:
    began = time.monotonic()
    server = start()
    print(f"\n{what} ready in {time.monotonic() - began:.1f} s")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server_logs() -> Iterator[ServerLogs]:
    """Fixtures that start a server register its log here (`server_logs.watch`); once they
    have stopped it, a traceback in any of those logs fails the test (an error at teardown)."""
    logs = ServerLogs()
    yield logs
    problems = logs.problems()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """PostgreSQL 15 for the whole session; tests use `pg_url` for a database of their own."""
    yield from _serve(PostgresServer.start, "PostgreSQL")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedFS]:
    """SeaweedFS (`weed mini`) for the whole session; tests use `s3_store` for a bucket."""
    yield from _serve(SeaweedFS.start, "SeaweedFS S3")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    yield from _serve(RedisServer.start, "Redis")


@pytest.fixture
def pg_url(postgres: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL of a new, empty database, dropped after the test."""
    postgres.up()  # in case an earlier test stopped it and did not restart it
    name = f"test_{secrets.token_hex(6)}"
    url = postgres.create_database(name)
    yield url
    postgres.up()
    postgres.drop_database(name)


@pytest.fixture
def s3_store(s3_server: SeaweedFS, tmp_path: Path) -> Iterator[S3Store]:
    """An S3Store on a new bucket, removed with its objects after the test."""
    s3_server.up()
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    store = S3Store.connect(
        s3_server.endpoint,
        f"test-{secrets.token_hex(6)}",
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
        spool_dir=spool,
    )
    store.ensure_bucket()
    yield store
    s3_server.up()
    _remove_bucket(s3_server, store.bucket)


@pytest.fixture
def fs_store(tmp_path: Path) -> FilesystemStore:
    """A FilesystemStore rooted in the test's tmp_path."""
    return FilesystemStore(tmp_path / "objects", spool_dir=tmp_path / "spool")


def _remove_bucket(server: SeaweedFS, bucket: str) -> None:
    # SeaweedFS keeps a volume per bucket and has a fixed number of them: every test bucket
    # must go, or a long session runs out ("No writable volumes and no free volumes left").
    client = server.client()
    for item in client.list_objects(bucket, recursive=True):
        if item.object_name is not None:
            client.remove_object(bucket, item.object_name)
    client.remove_bucket(bucket)


@pytest.fixture(scope="session")
def kube() -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager on loopback, shared by the session.

    The binaries come from `scripts/build-testbed.sh`; without them these tests fail with a
    message saying so. Deselect them with `pytest -m "not kube"`.
    """
    started = time.monotonic()
    plane = start_control_plane()
    print(f"\nKubernetes control plane ready in {time.monotonic() - started:.1f} s")
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def kube_namespace(kube: ControlPlane) -> Iterator[str]:
    """A fresh namespace for one test, deleted (asynchronously) afterwards."""
    with fresh_namespace(kube) as name:
        yield name
