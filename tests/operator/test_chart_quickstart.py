"""The chart's quickstart on a real API server: its resources pass the CRDs' validation, the
operator (as the chart's ServiceAccount) makes the archive's objects from them, and the
pre-delete hook (as its own ServiceAccount) removes them, finalizers done, before helm would
delete the operator and the database."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_support import (
    CHART,
    SERVICE_ACCOUNT,
    Cluster,
)
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from noctis.core.facilities import resolve_caller
from noctis.index.migrate import upgrade
from noctis.index.models import Facility
from support import wait
from support.kube import ControlPlane, fresh_namespace
from support.logs import ServerLogs
from support.s3 import SeaweedFS

pytestmark = pytest.mark.kube

TEARDOWN_ACCOUNT = "noctis-quickstart-teardown"
RESOURCES = [
    ("dicomnodes", "noctis"),
    ("archives", "noctis"),
    ("facilities", "quickstart"),
    ("storagepools", "noctis"),
]


@pytest.fixture
def quickstart(
    kube: ControlPlane, s3_server: SeaweedFS, tmp_path: Path, server_logs: ServerLogs
) -> Iterator[Cluster]:
    """The quickstart rendered and applied in a fresh namespace, the operator running in it."""
    database_url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    upgrade(database_url)
    with fresh_namespace(kube, "qs") as namespace:
        rendered = kube.helm(
            "template", "noctis", str(CHART), "--namespace", namespace,
            "--set", "quickstart.enabled=true",
            "--set", "quickstart.allowedCIDRs={10.88.0.1/32}",
            "--set", "quickstart.dicomNode.minReplicas=2",
        ).stdout  # fmt: skip
        try:
            kube.kubectl("apply", "--namespace", namespace, "-f", "-", input=rendered)
            token = kube.create_token(namespace, SERVICE_ACCOUNT)
            kubeconfig = kube.kubeconfig_for_token(token, user=f"operator-{namespace}")
            plane = Cluster(
                kube,
                namespace,
                database_url,
                s3_server,
                kubeconfig,
                tmp_path,
                server_logs=server_logs,
            )
            plane.start_operator("main")
            try:
                yield plane
            finally:
                assert plane.operator is not None
                plane.operator.stop()
        finally:
            # Cluster-scoped, so not deleted with the namespace: `helm install` of release noctis
            # in a later test would refuse to adopt it.
            kube.kubectl("delete", "clusterrole", "noctis-operator", check=False)


def test_quickstart_resources_become_an_archive(quickstart: Cluster) -> None:
    plane = quickstart
    plane.wait_condition("facility", "quickstart", timeout=60)
    engine = create_engine(plane.database_url)
    try:
        with Session(engine) as session:
            # Any AE title, from the allowed network only.
            caller = resolve_caller(session, "ANY_SCANNER", "10.88.0.1")
            assert caller is not None and caller.facility_name == "quickstart"
            assert resolve_caller(session, "ANY_SCANNER", "10.88.0.2") is None
    finally:
        engine.dispose()

    api = wait.until(
        lambda: plane.get("deployment", "noctis-api"),
        timeout=60,
        what="the API Deployment",
        interval=0.2,
    )
    (container,) = api["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("valueFrom") for e in container["env"]}
    assert env["NOCTIS_ADMIN_PASSWORD"] == {
        "secretKeyRef": {"name": "noctis-admin", "key": "password"}
    }
    assert env["NOCTIS_DATABASE_URL"] == {
        "secretKeyRef": {"name": "noctis-postgresql", "key": "url"}
    }
    assert env["NOCTIS_BROKER_URL"] == {"secretKeyRef": {"name": "noctis-redis", "key": "url"}}
    assert env["NOCTIS_INDEX_SECRETS_KEY"] == {
        "secretKeyRef": {"name": "noctis-index-secrets", "key": "key"}
    }
    assert wait.until(
        lambda: plane.get("deployment", "noctis-worker"),
        timeout=30,
        what="the worker Deployment",
        interval=0.2,
    )
    config = wait.until(
        lambda: plane.get("configmap", "noctis-config"),
        timeout=30,
        what="the Archive config",
        interval=0.2,
    )
    assert config["data"]["NOCTIS_S3_ENDPOINT"] == f"noctis-s3.{plane.namespace}.svc:8333"

    scp = wait.until(
        lambda: plane.get("deployment", "noctis-scp"),
        timeout=60,
        what="the SCP Deployment",
        interval=0.2,
    )
    assert scp["spec"]["replicas"] == 2
    service = wait.until(
        lambda: plane.get("service", "noctis-scp"), timeout=30, what="the SCP Service", interval=0.2
    )
    assert service["spec"]["type"] == "LoadBalancer"
    assert [p["port"] for p in service["spec"]["ports"]] == [11112]
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    scp_config = wait.until(
        lambda: plane.get("configmap", "noctis-scp"),
        timeout=30,
        what="the SCP config",
        interval=0.2,
    )
    assert scp_config["data"]["NOCTIS_AE_TITLE"] == "NOCTIS"


def test_pre_delete_hook_removes_the_resources_with_their_finalizers(
    quickstart: Cluster,
) -> None:
    plane = quickstart
    plane.wait_condition("facility", "quickstart", timeout=60)
    wait.until(
        lambda: (
            "pacs.noctis.io/finalizer"
            in (
                (plane.get("storagepool", "noctis") or {}).get("metadata", {}).get("finalizers")
                or []
            )
        ),
        timeout=60,
        what="the StoragePool's finalizer",
        interval=0.2,
    )
    token = plane.kube.create_token(plane.namespace, TEARDOWN_ACCOUNT)
    kubeconfig = plane.kube.kubeconfig_for_token(token, user=f"teardown-{plane.namespace}")
    result = subprocess.run(
        [
            sys.executable, "-m", "noctis.operator.teardown",
            f"--namespace={plane.namespace}", "--timeout=120",
            *(f"{kind}/{name}" for kind, name in RESOURCES),
        ],
        env=plane.kube.env(kubeconfig),
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Facility" in result.stdout and "deleted" in result.stdout
    for kind, name in RESOURCES:
        assert plane.get(kind, name) is None, (kind, name)
    engine = create_engine(plane.database_url)
    try:
        with Session(engine) as session:
            facility = session.scalar(select(Facility).where(Facility.name == "quickstart"))
            assert facility is not None and facility.enabled is False  # studies kept
    finally:
        engine.dispose()
    # The hook's account may delete these four and nothing else.
    other = plane.kube.kubectl(
        "auth", "can-i", "delete", "secrets", "-n", plane.namespace, kubeconfig=kubeconfig,
        check=False,
    ).stdout.strip()  # fmt: skip
    assert other == "no"
