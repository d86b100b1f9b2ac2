"""The SCP Deployment scales on real metrics: metrics-server (built from its Go module) reads the
kubelet, the DicomNode's HorizontalPodAutoscaler adds a pod under a bounded load of parallel
associations, the replicas share new associations, and the HPA scales back down once the load is
gone (after the 300 s stabilisation window the operator asks for: a stopping pod drains)."""

from __future__ import annotations

import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from support import dcmtk, wait
from support.cluster import chart
from support.cluster.cluster import Cluster
from support.dicomdata import generate_ct_series

pytestmark = pytest.mark.dcmtk

NAMESPACE = chart.NAMESPACE
SCP = "noctis-scp"
SCP_SELECTOR = "app.kubernetes.io/component=scp,app.kubernetes.io/instance=noctis"
SENDERS = 4
SCALE_UP_TIMEOUT = 300
SCALE_DOWN_TIMEOUT = 600  # 300 s stabilisation, then one pod a minute
KUBE_PROXY_SYNC_PERIOD = 30  # the test bed's kube-proxy (support/cluster/configs.py)
HEALTH_PORT = 8081  # the SCP pods' health and metrics port


def hpa(cluster: Cluster) -> dict:
    return dict(cluster.kubectl_json("get", "hpa", "-n", NAMESPACE, SCP))


def ready_scp_pods(cluster: Cluster) -> list[dict]:
    pods = cluster.kubectl_json("get", "pods", "-n", NAMESPACE, "-l", SCP_SELECTOR)["items"]
    return [
        p
        for p in pods
        if "deletionTimestamp" not in p["metadata"]
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions", [])
        )
    ]


def associations_accepted(pod: dict) -> float:
    """The pod's own count of accepted associations, from its /metrics (pods' addresses are
    this test bed's own namespaces: reachable from here, and nowhere else)."""
    url = f"http://{pod['status']['podIP']}:{HEALTH_PORT}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    found = re.search(r"^noctis_scp_associations_total (\S+)$", text, re.MULTILINE)
    assert found, f"no association counter at {url}"
    return float(found.group(1))


def send_until(stop: threading.Event, host: str, port: str, files: list[Path]) -> None:
    command = [dcmtk.tool("storescu"), "-aet", "LOAD_CT", "-aec", "NOCTIS", host, port]
    while not stop.is_set():
        subprocess.run(
            [*command, *map(str, files)],
            capture_output=True,
            env=dcmtk.environment(),
            timeout=600,
            check=False,
        )


def test_the_hpa_scales_the_scp_out_under_load_and_back_in(
    cluster: Cluster, tmp_path: Path
) -> None:
    if not cluster.dicom:
        pytest.fail("Noctis is not installed on the cluster (no images: scripts/build-images.sh)")
    host, port = cluster.dicom.rsplit(":", 1)
    autoscaler = hpa(cluster)
    assert autoscaler["spec"]["minReplicas"] == 1 and autoscaler["spec"]["maxReplicas"] >= 2

    def measured() -> bool:
        metrics = hpa(cluster)["status"].get("currentMetrics") or []
        return any(
            m.get("resource", {}).get("current", {}).get("averageUtilization") is not None
            for m in metrics
        )

    wait.until(
        measured,
        timeout=120,
        what="the HPA to read the SCP's CPU from metrics-server",
        interval=0.2,
    )

    series = generate_ct_series(tmp_path / "ct", slices=100, patient_id="LOAD-1")
    stop = threading.Event()
    senders = [
        threading.Thread(target=send_until, args=(stop, host, port, series), daemon=True)
        for _ in range(SENDERS)
    ]
    began = time.monotonic()
    for sender in senders:
        sender.start()
    try:
        wait.until(
            lambda: hpa(cluster)["status"].get("desiredReplicas", 1) >= 2,
            timeout=SCALE_UP_TIMEOUT,
            what="the HPA to add an SCP pod under load",
            interval=2,
        )
        print(f"\nHPA asked for more SCP pods {time.monotonic() - began:.0f} s into the load")
    finally:
        stop.set()
        for sender in senders:
            sender.join(timeout=600)
    load_ended = time.monotonic()
    wait.until(
        lambda: len(ready_scp_pods(cluster)) >= 2,
        timeout=180,
        what="a second SCP pod Ready",
        interval=2,
    )

    # New associations spread over the replicas (kube-proxy picks an endpoint per connection),
    # once the Service lists both and kube-proxy has written its rules (within its sync period).
    try:
        pods = ready_scp_pods(cluster)
        wait.until(
            lambda: serving_addresses(cluster) >= {p["status"]["podIP"] for p in pods},
            timeout=60,
            what="the SCP Service's EndpointSlice to list both ready pods",
            interval=1,
        )
        rounds: list[dict[str, float]] = []

        def a_round_of_echoes_spreads() -> bool:
            gained = echo_round(pods, host, port)
            rounds.append(gained)
            return sum(1 for n in gained.values() if n > 0) >= 2

        wait.until(
            a_round_of_echoes_spreads,
            timeout=KUBE_PROXY_SYNC_PERIOD + 30,
            what="sixteen new associations to reach both SCP pods",
            interval=1,
        )
        print(f"sixteen associations spread as {rounds[-1]} (round {len(rounds)})")
    finally:
        # Back to one pod even when the spread failed: the cluster tests after this one
        # expect a single SCP replica.
        wait.until(
            lambda: (
                hpa(cluster)["status"].get("currentReplicas") == 1
                and len(ready_scp_pods(cluster)) == 1
            ),
            timeout=SCALE_DOWN_TIMEOUT,
            what="the HPA to scale the SCP back to one pod",
            interval=5,
        )
    print(f"back to one SCP pod {time.monotonic() - load_ended:.0f} s after the load stopped")


def serving_addresses(cluster: Cluster) -> set[str]:
    """The pod addresses the SCP Service's EndpointSlices list as ready."""
    slices = cluster.kubectl_json(
        "get", "endpointslices", "-n", NAMESPACE, "-l", f"kubernetes.io/service-name={SCP}"
    )["items"]
    return {
        address
        for endpoint_slice in slices
        for endpoint in endpoint_slice.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready")
        for address in endpoint["addresses"]
    }


def echo_round(pods: list[dict], host: str, port: str) -> dict[str, float]:
    """Sixteen parallel C-ECHOs through the Service; how many each pod accepted."""
    before = {p["metadata"]["name"]: associations_accepted(p) for p in pods}
    echoes = [
        subprocess.Popen(
            [dcmtk.tool("echoscu"), "-aet", "SPREAD", "-aec", "NOCTIS", host, port],
            env=dcmtk.environment(),
        )
        for _ in range(16)
    ]
    assert [echo.wait(timeout=60) for echo in echoes] == [0] * 16
    after = {p["metadata"]["name"]: associations_accepted(p) for p in pods}
    gained = {name: after[name] - before[name] for name in before}
    assert sum(gained.values()) == 16, gained
    return gained
