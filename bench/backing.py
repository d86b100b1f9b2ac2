"""Backing services the targets need: PostgreSQL (Orthanc's and Noctis's index) and S3.

PostgreSQL and SeaweedFS come from the test support package (tests/support/postgres.py,
tests/support/s3.py), the same code that starts them for the test suite, so there is one way to
run them on a machine; MinIO, faster, is the benchmark's own (bench/minio.py).
The tests turn PostgreSQL's durability off; a benchmark that compares archives must not, so
by default the server here keeps PostgreSQL's own defaults (fsync, synchronous_commit and
full_page_writes on). `--pg-fsync off` gives the test settings instead.
"""

from __future__ import annotations

from typing import Any

from bench.minio import MinioServer, minio_binary
from bench.procs import BenchError, test_support

_TEST_ONLY_SETTINGS = ("--fsync=", "--synchronous_commit=", "--full_page_writes=")


def start_postgres(*, durable: bool) -> Any:
    """A fresh PostgreSQL 15 on a free loopback port (a `support.postgres.PostgresServer`)."""
    test_support()
    try:
        from support.postgres import PostgresServer
    except ImportError as exc:
        raise BenchError(f"tests/support/postgres.py cannot be imported: {exc}") from exc

    class BenchPostgres(PostgresServer):  # type: ignore[misc, valid-type]
        def _server_args(self) -> list[str]:
            args: list[str] = super()._server_args()
            if durable:
                args = [a for a in args if not a.startswith(_TEST_ONLY_SETTINGS)]
            return args

    return BenchPostgres.start()


def server_pids(server: Any) -> list[int]:
    """The root pid of a server from `start_postgres` or `start_s3` (the process started
    through tests/support `spawn` or `bench.minio`, kept in its `_process`), while it runs.

    As root, PostgreSQL is started with Popen's `user=`, which switches user in the child
    before exec: the pid is the postmaster itself, not a sudo or runuser wrapper. Were it one,
    the postmaster would still be measured: CPU is summed over the whole tree under the pid.
    """
    process = getattr(server, "_process", None)
    if process is None or process.poll() is not None:
        return []
    return [process.pid]


def postgres_settings(server: Any) -> dict[str, str]:
    """The settings that matter for write throughput, as the server reports them."""
    names = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "shared_buffers")
    with server.connect() as conn:
        return {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in names}


def postgres_superuser() -> str:
    test_support()
    from support.postgres import SUPERUSER

    return str(SUPERUSER)


S3_SERVERS = ("minio", "seaweedfs")


def s3_server_name(wanted: str) -> str:
    """``auto``: MinIO if `scripts/build-testbed.sh minio` built it, SeaweedFS otherwise."""
    if wanted == "auto":
        return "minio" if minio_binary() is not None else "seaweedfs"
    if wanted == "minio" and minio_binary() is None:
        raise BenchError("MinIO is not built: run scripts/build-testbed.sh minio")
    return wanted


def start_s3(bucket: str, server_name: str) -> Any:
    """The S3 server ``server_name`` (see `s3_server_name`) on free loopback ports, with
    ``bucket``: a `bench.minio.MinioServer` or a `support.s3.SeaweedFS`."""
    if server_name == "minio":
        binary = minio_binary()
        if binary is None:
            raise BenchError("MinIO is not built: run scripts/build-testbed.sh minio")
        server: Any = MinioServer.start(binary)
    else:
        test_support()
        try:
            from support.s3 import SeaweedFS
        except ImportError as exc:
            raise BenchError(f"tests/support/s3.py cannot be imported: {exc}") from exc
        server = SeaweedFS.start()
    try:
        client = server.client()
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
    except BaseException:
        server.stop()
        raise
    return server


def count_objects(server: Any, bucket: str, suffix: str = ".dcm") -> int:
    """Objects in `bucket` whose key ends with `suffix` (instances, not derivatives)."""
    client = server.client()
    return sum(
        1 for obj in client.list_objects(bucket, recursive=True) if obj.object_name.endswith(suffix)
    )
