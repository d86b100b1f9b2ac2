"""What the pods need to see a client's real address, on a real API server.

The SCP caps connections per client address and the registry admits AEs by CIDR: the
DicomNode's Service keeps the caller's address (``externalTrafficPolicy: Local``) unless told
otherwise. The API believes X-Forwarded-For only from the proxies an Archive names.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from operator_support import (
    ROOT,
    Cluster,
    operator_log_tail,
)

from support import wait
from support.kube import ControlPlane

pytestmark = [pytest.mark.kube, pytest.mark.s3]

EXAMPLES = ROOT / "crds" / "examples"


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())  # type: ignore[no-any-return]


@pytest.fixture
def archive(cluster: Cluster) -> Cluster:
    """The example Secrets, a StoragePool on the session's S3 server and the example Archive."""
    cluster.apply((EXAMPLES / "secrets.yaml").read_text())
    pool = example("storagepool")
    pool["spec"].update(
        endpoint=f"http://{cluster.s3.endpoint}", bucket=f"{cluster.namespace}-images"
    )
    cluster.apply(pool)
    cluster.apply(example("archive"))
    cluster.wait_condition("archive", "noctis")
    return cluster


def node(name: str, service: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "pacs.noctis.io/v1alpha1",
        "kind": "DicomNode",
        "metadata": {"name": name},
        "spec": {"aeTitle": name.upper(), "service": service},
    }


def service_spec(cluster: Cluster, name: str) -> dict[str, Any]:
    return dict((cluster.get("service", f"{name}-scp") or {}).get("spec") or {})


def per_address_cap(cluster: Cluster, name: str) -> str | None:
    """NOCTIS_MAX_CONNECTIONS_PER_ADDRESS in the SCP's ConfigMap (None: the SCP's default)."""
    data = (cluster.get("configmap", f"{name}-scp") or {}).get("data") or {}
    return data.get("NOCTIS_MAX_CONNECTIONS_PER_ADDRESS")  # type: ignore[no-any-return]


def test_the_scp_service_keeps_client_addresses_by_default(archive: Cluster) -> None:
    cluster = archive
    cluster.apply(node("lb", {}))
    cluster.apply(node("np", {"type": "NodePort"}))
    cluster.apply(node("internal", {"type": "ClusterIP"}))
    for name in ("lb", "np", "internal"):
        cluster.wait_condition("dicomnode", name)

    lb = service_spec(cluster, "lb")
    assert (lb["type"], lb["externalTrafficPolicy"]) == ("LoadBalancer", "Local")
    # The API server gives a Local LoadBalancer the port a cloud's health check asks for
    # which nodes run an SCP pod.
    assert lb["healthCheckNodePort"] > 0
    assert per_address_cap(cluster, "lb") is None
    np = service_spec(cluster, "np")
    assert (np["type"], np["externalTrafficPolicy"]) == ("NodePort", "Local")
    internal = service_spec(cluster, "internal")
    assert internal["type"] == "ClusterIP" and "externalTrafficPolicy" not in internal


def test_cluster_policy_can_be_chosen_and_changed_back(archive: Cluster) -> None:
    cluster = archive
    cluster.apply(node("spread", {"externalTrafficPolicy": "Cluster"}))
    cluster.wait_condition("dicomnode", "spread")
    assert service_spec(cluster, "spread")["externalTrafficPolicy"] == "Cluster"
    assert per_address_cap(cluster, "spread") == "0"  # every caller has a node's address

    def patch(policy: str) -> None:
        change = {"spec": {"service": {"externalTrafficPolicy": policy}}}
        cluster.kubectl("patch", "dicomnode", "spread", "--type", "merge", "-p", json.dumps(change))

    patch("Local")
    wait.until(
        lambda: service_spec(cluster, "spread").get("healthCheckNodePort"),
        timeout=30,
        what="the Service to become Local",
        context=operator_log_tail(cluster.log),
        interval=0.2,
    )
    assert service_spec(cluster, "spread")["externalTrafficPolicy"] == "Local"
    wait.until(
        lambda: per_address_cap(cluster, "spread") is None,
        timeout=30,
        what="the cap back",
        context=operator_log_tail(cluster.log),
        interval=0.2,
    )
    patch("Cluster")
    wait.until(
        lambda: service_spec(cluster, "spread")["externalTrafficPolicy"] == "Cluster",
        timeout=30,
        what="the Service to become Cluster again",
        context=operator_log_tail(cluster.log),
        interval=0.2,
    )
    assert "healthCheckNodePort" not in service_spec(cluster, "spread")
    assert per_address_cap(cluster, "spread") == "0"
    ready = cluster.wait_condition("dicomnode", "spread")
    assert ready["observedGeneration"] == 3


@pytest.mark.parametrize(
    ("service", "message"),
    [
        ({"externalTrafficPolicy": "local"}, 'Unsupported value: "local"'),
        ({"externalTrafficPolicy": "Proxy"}, 'Unsupported value: "Proxy"'),
    ],
)
def test_the_schema_refuses_an_unknown_traffic_policy(
    kube: ControlPlane, kube_namespace: str, service: dict[str, Any], message: str
) -> None:
    result = kube.kubectl(
        "apply",
        "-n",
        kube_namespace,
        "--dry-run=server",
        "-f",
        "-",
        input=yaml.safe_dump(node("bad", service)),
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr and "externalTrafficPolicy" in result.stderr


def api_env(cluster: Cluster) -> dict[str, str]:
    deployment = cluster.get("deployment", "noctis-api") or {}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_the_api_believes_forwarded_addresses_from_the_named_proxies_only(
    archive: Cluster,
) -> None:
    cluster = archive
    assert "NOCTIS_TRUSTED_PROXIES" not in api_env(cluster)  # by default nobody's counts

    def patch(proxies: list[str] | None) -> None:
        change = {"spec": {"api": {"trustedProxies": proxies}}}
        cluster.kubectl("patch", "archive", "noctis", "--type", "merge", "-p", json.dumps(change))

    patch(["10.244.0.0/16", "fd00:10::/64"])  # e.g. the ingress controller's pods
    wait.until(
        lambda: api_env(cluster).get("NOCTIS_TRUSTED_PROXIES") == "10.244.0.0/16,fd00:10::/64",
        timeout=30,
        what="the API pods' NOCTIS_TRUSTED_PROXIES",
        context=operator_log_tail(cluster.log),
        interval=0.2,
    )
    cluster.wait_condition("archive", "noctis")
    patch(None)
    wait.until(
        lambda: "NOCTIS_TRUSTED_PROXIES" not in api_env(cluster),
        timeout=30,
        what="NOCTIS_TRUSTED_PROXIES to go",
        context=operator_log_tail(cluster.log),
        interval=0.2,
    )


@pytest.mark.parametrize(
    ("proxies", "message"),
    [
        (["0.0.0.0/0"], "a /0 network would trust every address"),
        (["::/0"], "a /0 network would trust every address"),
        (["*"], "spec.api.trustedProxies[0]"),
        (["10.0.0.0/33"], "spec.api.trustedProxies[0]"),
    ],
)
def test_the_schema_refuses_trusting_everyone(
    kube: ControlPlane, kube_namespace: str, proxies: list[str], message: str
) -> None:
    doc = example("archive")
    doc["metadata"]["name"] = "bad"
    doc["spec"]["api"]["trustedProxies"] = proxies
    result = kube.kubectl(
        "apply",
        "-n",
        kube_namespace,
        "--dry-run=server",
        "-f",
        "-",
        input=yaml.safe_dump(doc),
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
