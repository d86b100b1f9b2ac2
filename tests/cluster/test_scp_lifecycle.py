"""SCP pods coming and going under a sending modality, with a real kubelet's signals:

- a rolling update of the DicomNode (a changed setting) while an association sends: the old pod
  gets SIGTERM, stops listening and finishes the association; no C-STORE fails;
- an SCP pod killed (SIGKILL) mid-association: the sender sees the abort, every instance it got
  a Success for is in the archive, and the restarted pod takes the resend.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support import dcmtk, wait
from support.cluster import chart
from support.cluster.cluster import Cluster
from support.dicomdata import dataset_sha256, generate_ct_series, sop_instance_uid

pytestmark = pytest.mark.dcmtk

NAMESPACE = chart.NAMESPACE
CALLING_AE = "LIFECYCLE_CT"
SCP_SELECTOR = "app.kubernetes.io/component=scp,app.kubernetes.io/instance=noctis"


def scp_pods(cluster: Cluster) -> list[dict]:
    return list(cluster.kubectl_json("get", "pods", "-n", NAMESPACE, "-l", SCP_SELECTOR)["items"])


def is_ready(pod: dict) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
    )


def start_storescu(host: str, port: str, files: list[Path], log: Path) -> subprocess.Popen[str]:
    """storescu in the background, one association, every file in order; -v logs each store."""
    command = [dcmtk.tool("storescu"), "-v", "-aet", CALLING_AE, "-aec", "NOCTIS", host, port]
    with log.open("w") as out:
        return subprocess.Popen(
            [*command, *map(str, files)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=dcmtk.environment(),
        )


def acknowledged(log: Path) -> int:
    return log.read_text().count("Received Store Response (Success)")


def fetch_patient(cluster: Cluster, patient_id: str, directory: Path) -> dict[str, str]:
    host, port = str(cluster.dicom).rsplit(":", 1)
    got = dcmtk.getscu(
        int(port),
        {"PatientID": patient_id},
        level="PATIENT",
        model="patient",
        calling=CALLING_AE,
        called="NOCTIS",
        output_dir=directory,
        host=host,
    )
    assert got.ok, got.output[-2000:]
    return {sop_instance_uid(p): dataset_sha256(p) for p in directory.iterdir()}


@pytest.fixture
def noctis(cluster: Cluster) -> tuple[str, str]:
    if not cluster.dicom:
        pytest.fail("Noctis is not installed on the cluster (no images: scripts/build-images.sh)")
    host, port = cluster.dicom.rsplit(":", 1)
    return host, port


def test_a_rolling_update_drains_the_sending_association_without_a_failed_store(
    cluster: Cluster, noctis: tuple[str, str], tmp_path: Path
) -> None:
    host, port = noctis
    series = generate_ct_series(tmp_path / "ct", slices=300, patient_id="ROLLING-1")
    [old] = scp_pods(cluster)
    log = tmp_path / "storescu.log"
    sender = start_storescu(host, port, series * 6, log)  # ~30 s of sending over one association
    try:
        wait.until(
            lambda: acknowledged(log) >= 20,
            timeout=60,
            what="the association to be storing",
            interval=0.2,
        )
        # A changed setting: the pod template changes and the Deployment rolls.
        cluster.kubectl(
            "patch", "dicomnode", chart.RELEASE, "-n", NAMESPACE, "--type=merge",
            "-p", json.dumps({"spec": {"maxAssociations": 31}}),
        )  # fmt: skip

        def old_pod_terminating() -> bool:
            pods = {p["metadata"]["uid"]: p for p in scp_pods(cluster)}
            current = pods.get(old["metadata"]["uid"])
            return current is None or "deletionTimestamp" in current["metadata"]

        wait.until(
            old_pod_terminating,
            timeout=120,
            what="the old SCP pod to be told to stop",
            interval=0.2,
        )
        assert sender.poll() is None, "the association ended before the old pod was stopped"
        returncode = sender.wait(timeout=300)
    finally:
        if sender.poll() is None:
            sender.kill()
    output = log.read_text()
    assert returncode == 0, output[-3000:]
    assert acknowledged(log) == len(series) * 6
    assert "Store Response (" not in output.replace("Store Response (Success)", "")
    wait.until(
        lambda: [is_ready(p) for p in scp_pods(cluster)] == [True],
        timeout=180,
        what="the new pod",
        interval=0.2,
    )
    [new] = scp_pods(cluster)
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    stored = fetch_patient(cluster, "ROLLING-1", tmp_path / "fetched")
    assert stored == {sop_instance_uid(p): dataset_sha256(p) for p in series}


def _scp_process_id(cluster: Cluster, pod: dict) -> int:
    """The host pid of the SCP container's process (from the node's CRI)."""
    [status] = pod["status"]["containerStatuses"]
    container_id = status["containerID"].removeprefix("containerd://")
    crictl = [str(cluster.binaries.crictl), "--config", str(cluster.layout.config / "crictl.yaml")]
    inspected = subprocess.run(
        [*crictl, "inspect", container_id], capture_output=True, text=True, check=True
    )
    return int(json.loads(inspected.stdout)["info"]["pid"])


def test_an_scp_killed_mid_association_loses_nothing_acknowledged_and_takes_the_resend(
    cluster: Cluster, noctis: tuple[str, str], tmp_path: Path
) -> None:
    host, port = noctis
    series = generate_ct_series(tmp_path / "ct", slices=300, patient_id="KILLED-1")
    [pod] = scp_pods(cluster)
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    log = tmp_path / "storescu.log"
    sender = start_storescu(host, port, series, log)
    try:
        wait.until(
            lambda: acknowledged(log) >= 30,
            timeout=60,
            what="the association to be storing",
            interval=0.2,
        )
        os.kill(_scp_process_id(cluster, pod), signal.SIGKILL)
        returncode = sender.wait(timeout=120)
    finally:
        if sender.poll() is None:
            sender.kill()
    output = log.read_text()
    assert returncode != 0, "the sender did not see the association die"
    sent_before_the_kill = acknowledged(log)
    assert 30 <= sent_before_the_kill < len(series), output[-2000:]

    def restarted() -> bool:
        [current] = scp_pods(cluster)
        status = current["status"]["containerStatuses"][0]
        return status["restartCount"] > restarts and is_ready(current)

    wait.until(restarted, timeout=180, what="the SCP to be back", interval=0.2)
    # Everything acknowledged before the kill is there, byte for byte.
    stored = fetch_patient(cluster, "KILLED-1", tmp_path / "after-kill")
    expected = {sop_instance_uid(p): dataset_sha256(p) for p in series}
    acknowledged_files = series[:sent_before_the_kill]
    for path in acknowledged_files:
        assert stored.get(sop_instance_uid(path)) == dataset_sha256(path), path.name

    began = time.monotonic()
    resent = dcmtk.storescu(int(port), series, calling=CALLING_AE, called="NOCTIS", host=host)
    assert resent.ok, resent.output[-2000:]
    print(f"\nresend of {len(series)} instances took {time.monotonic() - began:.1f} s")
    assert fetch_patient(cluster, "KILLED-1", tmp_path / "after-resend") == expected
