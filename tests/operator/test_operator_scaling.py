"""Worker replicas follow queue depth: the operator reads the Archive's real Redis broker and
sets the worker and transfer Deployments' replicas within the declared bounds, on the test
bed's API server under the chart's RBAC (no kubelet: the Deployment specs say it)."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
import redis
import yaml
from operator_support import Cluster
from test_operator_cluster import example, pool_example

from noctis.core.queue import CeleryQueue, destination_queue, facility_queue
from support import wait
from support.redis import RedisServer

pytestmark = [pytest.mark.kube, pytest.mark.s3]

COOL_DOWN = 4


def broker_secret(url: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "noctis-broker"},
        "stringData": {"url": url},
    }


def autoscaled_archive() -> dict[str, Any]:
    doc = example("archive")
    doc["spec"]["worker"]["autoscale"] = {
        "minReplicas": 1,
        "maxReplicas": 4,
        "tasksPerReplica": 5,
        "coolDownSeconds": COOL_DOWN,
    }
    doc["spec"]["transfers"] = {
        "autoscale": {
            "minReplicas": 0,
            "maxReplicas": 2,
            "tasksPerReplica": 3,
            "coolDownSeconds": COOL_DOWN,
        }
    }
    return doc


def replicas(cluster: Cluster, deployment: str) -> int | None:
    obj = cluster.get("deployment", deployment)
    return None if obj is None else int(obj["spec"].get("replicas", -1))


def scaling_status(cluster: Cluster, field: str) -> dict[str, Any]:
    return ((cluster.get("archive", "noctis") or {}).get("status") or {}).get(field) or {}


def wait_replicas(cluster: Cluster, deployment: str, count: int, timeout: float = 30) -> None:
    wait.until(
        lambda: replicas(cluster, deployment) == count,
        timeout=timeout,
        what=f"{deployment} at {count} replica(s) (now {replicas(cluster, deployment)})",
        interval=0.2,
    )


@pytest.fixture
def broker(redis_server: RedisServer) -> str:
    redis_server.up()
    redis.Redis.from_url(redis_server.url).flushdb()
    return redis_server.url


def test_workers_scale_with_queue_depth_within_bounds(cluster: Cluster, broker: str) -> None:
    cluster.apply(broker_secret(broker))
    cluster.apply(pool_example(cluster))
    cluster.apply(example("facility"))
    cluster.apply(autoscaled_archive())
    cluster.wait_condition("archive", "noctis", timeout=60)
    wait_replicas(cluster, "noctis-worker", 1)  # created at minReplicas
    wait_replicas(cluster, "noctis-transfer", 0)
    wait.until(
        lambda: scaling_status(cluster, "workerScaling").get("measured"),
        timeout=30,
        what="a first measurement in the Archive's status",
    )
    status = (cluster.get("archive", "noctis") or {})["status"]
    assert "noctis.destination.STMARY_WS" in status["destinationQueues"]

    sender = CeleryQueue(broker)
    for n in range(12):  # ceil(12 / 5) = 3 workers
        sender.send("noctis.example", queue=facility_queue("st-mary"), n=n)
    wait_replicas(cluster, "noctis-worker", 3)
    worker = scaling_status(cluster, "workerScaling")
    assert (worker["queued"], worker["wantedReplicas"]) == (12, 3), worker

    for n in range(30):  # 42 tasks would want 9: bounded at 4
        sender.send("noctis.example", queue=facility_queue("st-mary"), n=n)
    for n in range(4):  # ceil(4 / 3) = 2 transfer workers
        sender.send("noctis.example", queue=destination_queue("STMARY_WS"), n=n)
    wait_replicas(cluster, "noctis-worker", 4)
    wait_replicas(cluster, "noctis-transfer", 2)
    assert replicas(cluster, "noctis-worker") == 4  # a derived backlog never scales transfers

    assert cluster.operator is not None
    with urllib.request.urlopen(cluster.operator.metrics_url, timeout=5) as response:
        metrics = response.read().decode()
    namespace = f'namespace="{cluster.namespace}"'
    depth = f'noctis_queue_depth{{archive="noctis",{namespace},queue='
    assert f'{depth}"noctis.facility.st-mary"}} 42.0' in metrics
    assert f'{depth}"noctis.destination.STMARY_WS"}} 4.0' in metrics
    wanted = 'noctis_workers_wanted_replicas{archive="noctis",deployment="noctis-worker"'
    assert f"{wanted},{namespace}}} 4.0" in metrics

    redis.Redis.from_url(broker).flushdb()  # the queues drain
    wait.until(
        lambda: scaling_status(cluster, "workerScaling").get("queued") == 0,
        timeout=30,
        what="the drained queues measured",
    )
    kept = scaling_status(cluster, "workerScaling")
    if kept["replicas"] == 4:  # within the cool-down (a slow machine may be past it already)
        assert kept["wantedReplicas"] == 1 and "kept until" in kept["message"], kept
    wait_replicas(cluster, "noctis-worker", 1, timeout=COOL_DOWN + 30)
    wait_replicas(cluster, "noctis-transfer", 0, timeout=COOL_DOWN + 30)


def test_an_unreachable_broker_leaves_replicas_alone(cluster: Cluster) -> None:
    cluster.apply(broker_secret("redis://127.0.0.1:1/0"))  # nothing listens on port 1
    cluster.apply(pool_example(cluster))
    cluster.apply(autoscaled_archive())
    cluster.wait_condition("archive", "noctis", timeout=60)
    wait_replicas(cluster, "noctis-worker", 1)
    status = wait.until(
        lambda: (
            message
            if "broker" in (message := scaling_status(cluster, "workerScaling").get("message", ""))
            else None
        ),
        timeout=30,
        what="the broker problem in the Archive's status",
    )
    assert "cannot read the broker's queues" in status and "replicas unchanged" in status
    assert "127.0.0.1:1" not in status  # a broker URL may carry a password: never shown
    assert replicas(cluster, "noctis-worker") == 1


def test_the_api_server_refuses_crossed_bounds(cluster: Cluster) -> None:
    def refusal(doc: dict[str, Any]) -> str:
        result = cluster.kube.kubectl(
            "apply", "--namespace", cluster.namespace, "-f", "-",
            input=yaml.safe_dump(doc), check=False,
        )  # fmt: skip
        assert result.returncode != 0, result.stdout
        return str(result.stderr)

    crossed = autoscaled_archive()
    crossed["spec"]["worker"]["autoscale"].update(minReplicas=5, maxReplicas=2)
    assert "minReplicas must not exceed maxReplicas" in refusal(crossed)
    idle = autoscaled_archive()
    idle["spec"]["worker"]["autoscale"]["minReplicas"] = 0
    assert "the periodic jobs run there" in refusal(idle)
    assert cluster.get("archive", "noctis") is None
