"""The chart's quickstart pods, run from the test bed's images as a kubelet would run them.

Each backing service's container spec is taken from `helm template` (command, arguments with
`$(VAR)` expanded, environment from the rendered Secrets, user, read-only root, emptyDir
volumes) and started with podman in a network namespace of its own; a client in the same
namespace (the worker image, as the archive's pods would) uses the credentials the chart
generated. No registry, no kubelet: what is proven is that the manifests and the images fit.
"""

from __future__ import annotations

import json
import re
import textwrap
from typing import Any

import pytest

from chart.helm_chart import render_chart
from support.containers import BuiltImages, Container, podman

pytestmark = pytest.mark.images

CLIENT_TIMEOUT = 90


def quickstart_pod(
    images: BuiltImages, kind: str, name: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, str]]]:
    """(pod spec, its one container, the rendered Secrets' data by name)."""
    values = {
        "quickstart": {
            "enabled": True,
            "postgresql": {"image": images.assignments["NOCTIS_POSTGRES_IMAGE"]},
            "redis": {"image": images.assignments["NOCTIS_REDIS_IMAGE"]},
            "s3": {"image": images.assignments["NOCTIS_S3_IMAGE"]},
        }
    }
    docs = render_chart(values)
    secrets = {d["metadata"]["name"]: d["stringData"] for d in docs if d["kind"] == "Secret"}
    (workload,) = [d for d in docs if (d["kind"], d["metadata"]["name"]) == (kind, name)]
    pod = workload["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container, secrets


def start_like_kubelet(
    pod: dict[str, Any], container: dict[str, Any], secrets: dict[str, dict[str, str]]
) -> Container:
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]]

    def expand(arg: str) -> str:
        return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), arg)

    mounts = [
        f"{mount['mountPath']}:rw,U"  # an emptyDir its user may write (podman ignores mode=)
        for mount in container.get("volumeMounts", [])
        for volume in pod["volumes"]
        if volume["name"] == mount["name"] and "emptyDir" in volume
    ]
    options = ["--network", "none", "--user", f"{pod['securityContext']['runAsUser']}"]
    if container["securityContext"].get("readOnlyRootFilesystem"):
        options.append("--read-only")
    for mount in mounts:
        options += ["--tmpfs", mount]
    if "command" in container:
        options += ["--entrypoint", container["command"][0]]
    args = [*container.get("command", [])[1:], *(expand(a) for a in container.get("args", []))]
    return Container.run_with(container["image"], options, args, env)


def client(images: BuiltImages, server: Container, body: str) -> str:
    """Run Python in the server's network namespace, from the worker image, with ``retry``."""
    result = podman(
        "run", "--rm", "--network", f"container:{server.name}", "--entrypoint", "python",
        images.noctis("worker"), "-c", RETRY + textwrap.dedent(body),
        check=False, timeout=CLIENT_TIMEOUT + 30,
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(
            f"client failed:\n{result.stdout}{result.stderr}\n--- server log:\n"
            f"{server.logs()[-4000:]}"
        )
    return result.stdout.strip()


RETRY = f"""
import time
def retry(fn):
    deadline = time.monotonic() + {CLIENT_TIMEOUT}
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
"""


def test_quickstart_postgresql_takes_the_archives_url(images: BuiltImages) -> None:
    pod, container, secrets = quickstart_pod(images, "StatefulSet", "noctis-postgresql")
    server = start_like_kubelet(pod, container, secrets)
    try:
        url = secrets["noctis-postgresql"]["url"].replace("noctis-postgresql.pacs.svc", "127.0.0.1")
        said = client(
            images,
            server,
            f"""
            import sqlalchemy
            engine = sqlalchemy.create_engine({json.dumps(url)})
            def query():
                with engine.connect() as conn:
                    return conn.execute(sqlalchemy.text(
                        "SELECT current_user, current_database()")).one()
            print(*retry(query))
            """,
        )
        assert said == "noctis noctis"
        assert server.process_uid() == 999
        ready = server.exec(*container["readinessProbe"]["exec"]["command"])
        assert ready.returncode == 0, ready.stderr
    finally:
        server.stop()


def test_quickstart_redis_takes_the_brokers_url(images: BuiltImages) -> None:
    pod, container, secrets = quickstart_pod(images, "Deployment", "noctis-redis")
    server = start_like_kubelet(pod, container, secrets)
    try:
        url = secrets["noctis-redis"]["url"].replace("noctis-redis.pacs.svc", "127.0.0.1")
        without = url.replace(f":{secrets['noctis-redis']['password']}@", "@")
        said = client(
            images,
            server,
            f"""
            import redis
            print(retry(lambda: redis.Redis.from_url({json.dumps(url)}).ping()))
            try:
                redis.Redis.from_url({json.dumps(without)}).ping()
                print("open")
            except redis.AuthenticationError:
                print("closed")
            """,
        )
        assert said.split() == ["True", "closed"]
        assert server.process_uid() == 999
    finally:
        server.stop()


def test_quickstart_s3_serves_the_storage_pools_credentials(images: BuiltImages) -> None:
    pod, container, secrets = quickstart_pod(images, "StatefulSet", "noctis-s3")
    server = start_like_kubelet(pod, container, secrets)
    try:
        keys = secrets["noctis-s3"]
        said = client(
            images,
            server,
            f"""
            import io
            from minio import Minio
            s3 = Minio("127.0.0.1:8333", access_key={json.dumps(keys["accessKey"])},
                       secret_key={json.dumps(keys["secretKey"])}, secure=False)
            def put_and_get():
                if not s3.bucket_exists("noctis"):
                    s3.make_bucket("noctis")
                s3.put_object("noctis", "probe", io.BytesIO(b"stored"), 6)
                return s3.get_object("noctis", "probe").read().decode()
            print(retry(put_and_get))
            wrong = Minio("127.0.0.1:8333", access_key="nobody", secret_key="wrong-secret",
                          secure=False)
            try:
                wrong.list_buckets()
                print("open")
            except Exception:
                print("closed")
            """,
        )
        assert said.split() == ["stored", "closed"]
        assert server.process_uid() == 10002
    finally:
        server.stop()
