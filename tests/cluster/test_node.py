"""The one-node cluster itself: a Ready node, pods that really run and are really probed, a
LoadBalancer address on this machine that reaches them, and cluster DNS."""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import time
from typing import Any

import pytest

from support import wait
from support.cluster import layout as L
from support.cluster.cluster import Cluster

HELLO_PORT = 8080


def hello_deployment(image: str, name: str = "hello", probe_port: int = HELLO_PORT) -> dict:
    """The tests' probe target (tests/support/cluster/hello) as a Deployment of one pod."""
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True},
                    "containers": [
                        {
                            "name": name,
                            "image": image,
                            "imagePullPolicy": "Never",
                            "ports": [{"containerPort": HELLO_PORT, "name": "http"}],
                            "readinessProbe": {
                                "httpGet": {"path": "/", "port": probe_port},
                                "periodSeconds": 1,
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }


def hello_service(name: str = "hello", service_type: str = "LoadBalancer") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "type": service_type,
            "selector": {"app.kubernetes.io/name": name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


def apply(cluster: Cluster, namespace: str, *objects: dict) -> None:
    manifest = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def pods(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    listed = cluster.kubectl_json(
        "get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/name={name}"
    )
    return list(listed["items"])


def condition(pod: dict[str, Any], kind: str) -> str | None:
    for entry in pod.get("status", {}).get("conditions", []):
        if entry["type"] == kind:
            return str(entry["status"])
    return None


def http_get(host: str, port: int, timeout: float = 5.0) -> str:
    with socket.create_connection((host, port), timeout=timeout) as connection:
        connection.sendall(b"GET / HTTP/1.0\r\n\r\n")
        chunks = []
        while chunk := connection.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def test_node_is_ready_with_its_address_on_the_dummy_interface(cluster: Cluster) -> None:
    node = cluster.kubectl_json("get", "node", L.NODE_NAME)
    assert condition(node, "Ready") == "True", node["status"]["conditions"]
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == L.NODE_IP
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.34.4"
    assert info["containerRuntimeVersion"].startswith("containerd://1.6")
    assert node["spec"]["podCIDR"] == L.NODE_POD_CIDR


def test_a_pod_from_a_locally_built_image_is_ready_through_its_probe(
    cluster: Cluster, cluster_namespace: str
) -> None:
    # Two pods of the same image: one probed where it listens, one probed on a closed port.
    # Only the first may become Ready, so Ready really comes from the kubelet calling the probe.
    apply(
        cluster,
        cluster_namespace,
        hello_deployment(cluster.images["hello"], "hello"),
        hello_deployment(cluster.images["hello"], "hello-misprobed", probe_port=9999),
    )
    cluster.kubectl(
        "wait",
        "-n",
        cluster_namespace,
        "--for=condition=Available",
        "deployment/hello",
        "--timeout=90s",
        timeout=100,
    )
    [ready] = pods(cluster, cluster_namespace, "hello")
    assert condition(ready, "Ready") == "True"
    [status] = ready["status"]["containerStatuses"]
    assert status["ready"] and status["restartCount"] == 0
    assert ipaddress.ip_address(ready["status"]["podIP"]) in ipaddress.ip_network(L.NODE_POD_CIDR)
    log = cluster.kubectl("logs", "-n", cluster_namespace, ready["metadata"]["name"]).stdout
    assert f"hello: listening on :8080 as {ready['metadata']['name']}" in log

    def misprobed_running() -> bool:
        found = pods(cluster, cluster_namespace, "hello-misprobed")
        statuses = found[0].get("status", {}).get("containerStatuses", []) if found else []
        return bool(statuses) and "running" in statuses[0]["state"]

    wait.until(misprobed_running, timeout=60, what="the misprobed pod to run", interval=0.2)
    time.sleep(3)  # three probe periods
    [misprobed] = pods(cluster, cluster_namespace, "hello-misprobed")
    assert condition(misprobed, "Ready") == "False"
    events = cluster.kubectl(
        "get",
        "events",
        "-n",
        cluster_namespace,
        "--field-selector",
        f"involvedObject.name={misprobed['metadata']['name']},reason=Unhealthy",
        "-o",
        "jsonpath={.items[*].message}",
    ).stdout
    assert "Readiness probe failed" in events and "9999" in events


def test_a_loadbalancer_gets_a_loopback_address_that_reaches_the_pod(
    cluster: Cluster, cluster_namespace: str
) -> None:
    apply(
        cluster,
        cluster_namespace,
        hello_deployment(cluster.images["hello"]),
        hello_service(),
    )
    cluster.kubectl(
        "wait",
        "-n",
        cluster_namespace,
        "--for=condition=Available",
        "deployment/hello",
        "--timeout=90s",
        timeout=100,
    )

    def ingress() -> list[dict[str, str]]:
        service = cluster.kubectl_json("get", "service", "-n", cluster_namespace, "hello")
        return list(service["status"].get("loadBalancer", {}).get("ingress", []))

    wait.until(lambda: bool(ingress()), timeout=30, what="a LoadBalancer address", interval=0.2)
    [entry] = ingress()
    address = ipaddress.ip_address(entry["ip"])
    assert address in L.LOADBALANCER_POOL and address.is_loopback

    [pod] = pods(cluster, cluster_namespace, "hello")
    # kube-proxy syncs its rules within a second or so of the endpoint becoming ready.

    def answer() -> str:
        try:
            return http_get(str(address), 80)
        except OSError:
            return ""

    reply = wait.until(answer, timeout=30, what=f"an answer from {address}:80", interval=0.5)
    assert reply.startswith("HTTP/1.0 200 OK"), reply
    assert reply.endswith(f"hello from {pod['metadata']['name']}\n")


def _dns_query(server: str, name: str) -> list[str]:
    """A records for ``name`` from ``server`` (one UDP query, no library needed)."""
    query = struct.pack(">HHHHHH", 0x4E43, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    query += struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(query, (server, 53))
        answer = sock.recv(4096)
    count = struct.unpack(">H", answer[6:8])[0]
    offset, found = len(query), []
    for _ in range(count):
        offset += 2 if answer[offset] & 0xC0 else answer.index(b"\0", offset) + 1 - offset
        kind, _cls, _ttl, length = struct.unpack(">HHIH", answer[offset : offset + 10])
        offset += 10
        if kind == 1:
            found.append(socket.inet_ntoa(answer[offset : offset + length]))
        offset += length
    return found


def test_cluster_dns_names_services(cluster: Cluster, cluster_namespace: str) -> None:
    apply(cluster, cluster_namespace, hello_service(service_type="ClusterIP"))
    service = cluster.kubectl_json("get", "service", "-n", cluster_namespace, "hello")
    name = f"hello.{cluster_namespace}.svc.{L.CLUSTER_DOMAIN}"
    wait.until(
        lambda: bool(_dns_query(L.NODE_IP, name)),
        timeout=15,
        what=f"DNS to know {name}",
        interval=0.2,
    )
    assert _dns_query(L.NODE_IP, name) == [service["spec"]["clusterIP"]]
    assert _dns_query(L.NODE_IP, f"kubernetes.default.svc.{L.CLUSTER_DOMAIN}") == [
        L.KUBERNETES_SERVICE_IP
    ]


@pytest.mark.parametrize("name", ["deb.debian.org", "example.com"])
def test_cluster_dns_resolves_nothing_outside_the_cluster(cluster: Cluster, name: str) -> None:
    assert _dns_query(L.NODE_IP, name) == []
