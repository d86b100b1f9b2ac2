"""Noctis on the cluster: the chart with its quickstart option, from the locally built images.

The quickstart runs PostgreSQL, an S3 server and Redis in the cluster and applies a StoragePool,
Archive, Facility and DicomNode on them. Both the DicomNode's and the API's Services are of type
LoadBalancer here, so that this machine reaches them on loopback addresses (127.240.0.x), the
only addresses it may send to.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from noctis.operator.builders.archive import api_name
from noctis.operator.builders.dicomnode import scp_name
from support import wait
from support.kube import REPO_ROOT, TestbedError

if TYPE_CHECKING:
    from support.cluster.cluster import Cluster

RELEASE = "noctis"
NAMESPACE = "pacs"
CHART = REPO_ROOT / "charts" / "noctis"
INSTALL_TIMEOUT = 600.0
NOCTIS_COMPONENTS = ("operator", "scp", "worker", "api")
# What the SCP pods see as the caller's address for a connection from this machine: kube-proxy
# masquerades host traffic to a LoadBalancer address behind the pods' bridge gateway.
THIS_MACHINE_AS_SEEN_BY_PODS = "10.244.0.1/32"


# The backing services' data directories on the node (the chart's hostPath storage), owned by
# the users their images run as: it outlives `helm uninstall` (what a Retain StoragePool keeps)
# and goes with `scripts/cluster down`.
DATA_OWNERS = {"postgresql": 999, "s3": 10002}


def data_directory(cluster: Cluster) -> Path:
    volumes = cluster.layout.root / "volumes"
    for service, uid in DATA_OWNERS.items():
        (volumes / service).mkdir(parents=True, exist_ok=True)
        os.chown(volumes / service, uid, uid)
        (volumes / service).chmod(0o700)
    return volumes


def credentials(cluster: Cluster, admin_password: str | None) -> dict[str, str]:
    """The backing services' credentials and the admin's password, made once per cluster and
    kept (0600) in its state: a reinstall after `helm uninstall` must open the data it kept."""
    path = cluster.layout.pki / "noctis-credentials.json"
    saved: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    for key in ("postgres", "redis", "s3_access", "s3_secret", "admin"):
        saved.setdefault(key, secrets.token_urlsafe(24))
    if admin_password:
        saved["admin"] = admin_password
    path.write_text(json.dumps(saved, indent=2))
    path.chmod(0o600)
    return saved


def quickstart_values(
    images: dict[str, str], given: dict[str, str], data_dir: Path | None = None
) -> dict[str, Any]:
    """Chart values: local images (never pulled), quickstart on, reachable from this machine."""
    registry, _, tag = images["scp"].rpartition(":")
    registry = registry.rsplit("/", 1)[0]
    quickstart: dict[str, Any] = {
        "enabled": True,
        "imagePullPolicy": "Never",
        "allowedCIDRs": [THIS_MACHINE_AS_SEEN_BY_PODS],
        "adminPassword": given["admin"],
        "postgresql": {"image": images["postgres"], "password": given["postgres"]},
        "redis": {"image": images["redis"], "password": given["redis"]},
        "s3": {
            "image": images["s3"],
            "accessKey": given["s3_access"],
            "secretKey": given["s3_secret"],
        },
        "archive": {"serviceType": "LoadBalancer"},
        "dicomNode": {"serviceType": "LoadBalancer"},
    }
    if data_dir:
        quickstart["storage"] = {"type": "hostPath", "hostPath": str(data_dir)}
    return {
        "image": {"registry": registry, "tag": tag, "pullPolicy": "Never"},
        "quickstart": quickstart,
    }


def install(cluster: Cluster, admin_password: str | None = None) -> dict[str, float]:
    """`helm upgrade --install` with the quickstart; wait for every pod Ready and both
    LoadBalancer addresses; set ``cluster.dicom`` and ``cluster.web``. Returns timings."""
    missing = [
        c for c in (*NOCTIS_COMPONENTS, "postgres", "redis", "s3") if c not in cluster.images
    ]
    if missing:
        raise TestbedError(f"no image for {', '.join(missing)} (scripts/build-images.sh)")
    values = cluster.layout.config / "noctis-values.json"
    given = credentials(cluster, admin_password)
    chosen = quickstart_values(cluster.images, given, data_directory(cluster))
    values.write_text(json.dumps(chosen, indent=2))
    values.chmod(0o600)  # it may hold the admin's password
    began = time.monotonic()
    cluster.helm(
        "upgrade", "--install", RELEASE, str(CHART),
        "--namespace", NAMESPACE, "--create-namespace",
        "--values", str(values),
        "--wait", f"--timeout={int(INSTALL_TIMEOUT)}s",
        timeout=INSTALL_TIMEOUT + 30,
    )  # fmt: skip
    timings = {"helm": time.monotonic() - began}
    dicom_ip = _wait_loadbalancer(cluster, scp_name(RELEASE))
    web_ip = _wait_loadbalancer(cluster, api_name(RELEASE))
    _wait_pods_ready(cluster)
    timings["pods_ready"] = time.monotonic() - began
    node = cluster.kubectl_json("get", "dicomnode", "-n", NAMESPACE, RELEASE)
    web_port = cluster.kubectl_json("get", "service", "-n", NAMESPACE, api_name(RELEASE))["spec"][
        "ports"
    ][0]["port"]
    # Pods Ready is not yet routed: kube-proxy programs a new Service's LoadBalancer rules a
    # moment later (a reinstall met "connection refused" just after every pod was Ready).
    _wait_accepting(dicom_ip, int(node["spec"]["port"]))
    _wait_accepting(web_ip, int(web_port))
    cluster.dicom = f"{dicom_ip}:{node['spec']['port']}"
    cluster.web = f"http://{web_ip}" + ("" if web_port == 80 else f":{web_port}")
    return timings


def _wait_accepting(ip: str, port: int) -> None:
    def accepts() -> bool:
        try:
            with socket.create_connection((ip, port), timeout=2):
                return True
        except OSError:
            return False

    wait.until(accepts, timeout=60, what=f"{ip}:{port} to accept connections", interval=0.2)


def _wait_loadbalancer(cluster: Cluster, service: str) -> str:
    def address() -> str | None:
        found = cluster.kubectl(
            "get", "service", "-n", NAMESPACE, service, "-o", "json", check=False
        )
        if found.returncode != 0:
            return None
        ingress = json.loads(found.stdout)["status"].get("loadBalancer", {}).get("ingress") or []
        return str(ingress[0]["ip"]) if ingress else None

    return wait.until(
        address, timeout=INSTALL_TIMEOUT, what=f"Service {service}'s LoadBalancer", interval=0.2
    )


def _wait_pods_ready(cluster: Cluster) -> None:
    """Every Noctis pod (the operator's children too) Ready, or a clear error naming the rest."""
    expected = {"operator", "scp", "api", "worker"}

    def not_ready() -> list[str]:
        pods = cluster.kubectl_json("get", "pods", "-n", NAMESPACE)["items"]
        components = {
            p["metadata"].get("labels", {}).get("app.kubernetes.io/component") for p in pods
        }
        waiting = sorted(expected - components)
        for pod in pods:
            if pod["status"].get("phase") == "Succeeded":
                continue
            ready = any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in pod["status"].get("conditions", [])
            )
            if not ready:
                waiting.append(pod["metadata"]["name"])
        return waiting

    wait.until(
        lambda: not not_ready(),
        timeout=INSTALL_TIMEOUT,
        what="every Noctis pod to be Ready",
        interval=1.0,
        context=lambda: (
            f"still waiting for {not_ready()}\n"
            + cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide", check=False).stdout
        ),
    )


def admin_password_from_environment() -> str | None:
    return os.environ.get("NOCTIS_ADMIN_PASSWORD") or None
