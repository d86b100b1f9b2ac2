"""A Facility applied while the SCP pods run takes effect in them: an AE title newly registered
is accepted within seconds, one removed is refused (on a DicomNode serving that facility only,
so the quickstart's any-AE facility cannot answer for it)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from support import dcmtk, wait
from support.cluster import chart
from support.cluster.cluster import Cluster

pytestmark = pytest.mark.dcmtk

NAMESPACE = chart.NAMESPACE
NODE = "hot-reload"
FACILITY = "hot-reload"
NODE_AE = "HOTNODE"
NEW_AE = "HOT_CT_1"
SETTLE_SECONDS = 60  # the most a registry change may take to reach the SCP


def facility(*ae_titles: str) -> dict:
    return {
        "apiVersion": "pacs.noctis.io/v1alpha1",
        "kind": "Facility",
        "metadata": {"name": FACILITY, "namespace": NAMESPACE},
        "spec": {
            "displayName": "Hot reload",
            "storagePool": chart.RELEASE,
            "applicationEntities": [
                {
                    "aeTitle": ae,
                    "allowedCIDRs": [chart.THIS_MACHINE_AS_SEEN_BY_PODS],
                    "services": ["echo", "store"],
                }
                for ae in ae_titles
            ],
        },
    }


def dicom_node() -> dict:
    return {
        "apiVersion": "pacs.noctis.io/v1alpha1",
        "kind": "DicomNode",
        "metadata": {"name": NODE, "namespace": NAMESPACE},
        "spec": {
            "archive": chart.RELEASE,
            "aeTitle": NODE_AE,
            "port": 11112,
            "service": {"type": "LoadBalancer", "port": 11112},
            "minReplicas": 1,
            "maxReplicas": 1,
            "facilities": [FACILITY],
            "drainSeconds": 20,
        },
    }


def apply(cluster: Cluster, obj: dict) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))


@pytest.fixture
def hot_node(cluster: Cluster) -> Iterator[tuple[str, int]]:
    if not cluster.dicom:
        pytest.fail("Noctis is not installed on the cluster (no images: scripts/build-images.sh)")
    apply(cluster, facility("SOMEONE_ELSE"))
    apply(cluster, dicom_node())
    try:
        service = f"{NODE}-scp"

        def made() -> bool:
            found = cluster.kubectl("get", "deployment", "-n", NAMESPACE, service, check=False)
            return found.returncode == 0

        wait.until(
            made,
            timeout=60,
            what="the operator to make the hot-reload node's Deployment",
            interval=0.2,
        )
        cluster.kubectl(
            "rollout", "status", "-n", NAMESPACE, f"deployment/{service}", "--timeout=180s",
            timeout=200,
        )  # fmt: skip

        def address() -> str | None:
            found = cluster.kubectl_json("get", "service", "-n", NAMESPACE, service)
            ingress = found["status"].get("loadBalancer", {}).get("ingress") or []
            return ingress[0]["ip"] if ingress else None

        wait.until(
            lambda: address() is not None,
            timeout=60,
            what="the hot-reload node's LoadBalancer",
            interval=0.2,
        )
        yield str(address()), 11112
    finally:
        cluster.kubectl("delete", "-n", NAMESPACE, "dicomnode", NODE, "--wait=true", check=False)
        cluster.kubectl("delete", "-n", NAMESPACE, "facility", FACILITY, check=False)
        selector = f"app.kubernetes.io/instance={NODE}"
        cluster.kubectl(
            "wait", "--for=delete", "pods", "-n", NAMESPACE, "-l", selector, "--timeout=120s",
            check=False, timeout=130,
        )  # fmt: skip


def accepted(host: str, port: int, calling: str) -> bool:
    return dcmtk.echoscu(port, calling=calling, called=NODE_AE, host=host).ok


def seconds_until(condition: object, what: str) -> float:
    began = time.monotonic()
    wait.until(condition, timeout=SETTLE_SECONDS, what=what, interval=0.5)  # type: ignore[arg-type]
    return time.monotonic() - began


def test_an_ae_registered_while_the_scp_runs_is_accepted_and_refused_once_removed(
    cluster: Cluster, hot_node: tuple[str, int]
) -> None:
    host, port = hot_node
    assert not accepted(host, port, NEW_AE)  # the quickstart's any-AE facility is not served here

    apply(cluster, facility("SOMEONE_ELSE", NEW_AE))
    taken = seconds_until(lambda: accepted(host, port, NEW_AE), f"{NEW_AE} to be accepted")
    print(f"\n{NEW_AE} accepted {taken:.1f} s after its Facility was applied")

    apply(cluster, facility("SOMEONE_ELSE"))
    refused = seconds_until(lambda: not accepted(host, port, NEW_AE), f"{NEW_AE} to be refused")
    print(f"{NEW_AE} refused {refused:.1f} s after it was removed")
    log = cluster.kubectl("logs", "-n", NAMESPACE, f"deployment/{NODE}-scp", "--tail=50").stdout
    assert f"AE {NEW_AE!r} of facility 'quickstart' may not call this node" in log
