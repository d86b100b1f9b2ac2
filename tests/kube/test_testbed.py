"""The Kubernetes test bed itself: apiserver, controllers, garbage collection, RBAC, helm."""

from __future__ import annotations

import json

import pytest

from support import wait
from support.kube import ControlPlane, testbed_versions

pytestmark = pytest.mark.kube

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: registry.invalid/web:1
"""


def replicasets(kube: ControlPlane, namespace: str) -> list[dict]:
    return kube.kubectl_json("get", "replicasets", "-n", namespace)["items"]


def test_apiserver_is_ready_and_reports_the_built_version(kube: ControlPlane) -> None:
    status, _ = kube.api_get("/readyz")
    assert status == 200
    status, version = kube.api_get("/version")
    assert status == 200
    assert version["gitVersion"] == testbed_versions()["KUBERNETES_VERSION"]
    client = json.loads(kube.kubectl("version", "-o", "json").stdout)
    assert client["clientVersion"]["gitVersion"] == version["gitVersion"]


def test_deployment_gets_a_replicaset_and_gc_removes_it(
    kube: ControlPlane, kube_namespace: str
) -> None:
    kube.kubectl("apply", "-n", kube_namespace, "-f", "-", input=DEPLOYMENT)
    wait.until(
        lambda: len(replicasets(kube, kube_namespace)) == 1,
        what="a ReplicaSet",
        timeout=60,
        interval=0.25,
    )
    [replicaset] = replicasets(kube, kube_namespace)
    [owner] = replicaset["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"]) == ("Deployment", "web")

    kube.kubectl("delete", "deployment", "web", "-n", kube_namespace, "--wait=false")
    wait.until(
        lambda: replicasets(kube, kube_namespace) == [],
        what="garbage collection",
        timeout=60,
        interval=0.25,
    )


def test_serviceaccount_token_obeys_rbac(kube: ControlPlane, kube_namespace: str) -> None:
    ns = kube_namespace
    kube.kubectl("create", "serviceaccount", "reader", "-n", ns)
    config = kube.kubeconfig_for_token(kube.create_token(ns, "reader"), user="reader")

    denied = kube.kubectl("get", "configmaps", "-n", ns, kubeconfig=config, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    can_i = kube.kubectl(
        "auth", "can-i", "list", "configmaps", "-n", ns, kubeconfig=config, check=False
    )
    assert can_i.stdout.strip() == "no"

    kube.kubectl("create", "role", "read-cm", "-n", ns, "--verb=get,list", "--resource=configmaps")
    kube.kubectl(
        "create",
        "rolebinding",
        "reader-read-cm",
        "-n",
        ns,
        "--role=read-cm",
        f"--serviceaccount={ns}:reader",
    )
    allowed = kube.kubectl(
        "auth", "can-i", "list", "configmaps", "-n", ns, kubeconfig=config, check=False
    )
    assert allowed.stdout.strip() == "yes"
    kube.kubectl("get", "configmaps", "-n", ns, kubeconfig=config)
    # The Role grants nothing else.
    still_denied = kube.kubectl("get", "secrets", "-n", ns, kubeconfig=config, check=False)
    assert "forbidden" in still_denied.stderr.lower()


def test_helm_runs_and_reaches_the_cluster(kube: ControlPlane) -> None:
    version = kube.helm("version", "--short").stdout.strip()
    assert version.startswith(testbed_versions()["HELM_VERSION"])
    assert kube.helm("list", "--all-namespaces").returncode == 0
