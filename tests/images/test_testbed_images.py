"""The quickstart's backing services as the test bed builds them (Debian's PostgreSQL and
Redis, PyPI's SeaweedFS): non-root, started the way the chart starts them, and doing their job
with the credentials they were given."""

from __future__ import annotations

import secrets
from pathlib import Path

import psycopg
import pytest
import redis

from support.containers import BuiltImages, running, wait_for
from support.ports import free_ports
from support.s3 import SeaweedFS

pytestmark = pytest.mark.images

LOOPBACK = "127.0.0.1"


def test_postgres_image_creates_its_user_and_database(images: BuiltImages) -> None:
    (port,) = free_ports(1)
    password = secrets.token_hex(12)
    env = {"POSTGRES_USER": "noctis", "POSTGRES_PASSWORD": password, "POSTGRES_DB": "archive"}
    # The chart's command line, with the address and port of a test on the host's network.
    args = ["-c", f"listen_addresses={LOOPBACK}", "-c", f"port={port}"]
    with running(images.assignments["NOCTIS_POSTGRES_IMAGE"], *args, env=env) as container:

        def answers() -> bool:
            try:
                conninfo = f"host={LOOPBACK} port={port} user=noctis dbname=archive"
                with psycopg.connect(conninfo, password=password, connect_timeout=2) as conn:
                    return conn.execute("SELECT current_database()").fetchone() == ("archive",)
            except psycopg.OperationalError:
                return False

        wait_for(answers, 60, "PostgreSQL to accept the user", container)
        assert container.process_uid() == 999
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(
                f"host={LOOPBACK} port={port} user=noctis dbname=archive", password="wrong"
            )


def test_redis_image_requires_its_password(images: BuiltImages) -> None:
    (port,) = free_ports(1)
    password = secrets.token_hex(12)
    args = ["redis-server", "--bind", LOOPBACK, "--port", str(port), "--requirepass", password]
    with running(images.assignments["NOCTIS_REDIS_IMAGE"], *args) as container:
        client = redis.Redis(host=LOOPBACK, port=port, password=password, socket_timeout=2)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, 30, "Redis to answer", container)
        assert container.process_uid() == 999
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=LOOPBACK, port=port, password="wrong").ping()


def test_seaweedfs_image_serves_s3_with_its_credentials(
    images: BuiltImages, tmp_path: Path
) -> None:
    root = tmp_path / "s3"
    root.mkdir()
    root.chmod(0o777)  # the image's user (uid 10002) writes its data and sockets here
    server = SeaweedFS(root, access_key="noctis-test", secret_key=secrets.token_hex(16))
    env = {"AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key}
    image = images.assignments["NOCTIS_S3_IMAGE"]
    with running(image, *server.weed_arguments(), env=env, volumes=[f"{root}:{root}"]) as container:
        wait_for(server.answers, 90, "SeaweedFS to store and return an object", container)
        assert container.process_uid() == 10002
        wrong = SeaweedFS(root, access_key="noctis-test", secret_key="wrong")
        wrong.ports = server.ports
        assert not wrong.answers()
