"""The chart's life on the cluster: `helm upgrade` with a changed value rolls the SCP out;
`helm uninstall` leaves nothing of the release behind, and what the Retain StoragePool kept (on
the node's disk) is there again after a new install.

Runs last among the cluster tests (it takes Noctis away for a moment) and installs it again.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from support import dcmtk, wait
from support.cluster import chart
from support.cluster.cluster import Cluster
from support.dicomdata import dataset_sha256, generate_ct_series, sop_instance_uid

pytestmark = pytest.mark.dcmtk

NAMESPACE = chart.NAMESPACE
CALLING_AE = "UPGRADE_TEST"
SCP = "noctis-scp"
# Cluster-wide kinds a release makes (its CRDs stay, as Helm keeps every chart's CRDs).
CLUSTER_KINDS = "clusterroles,clusterrolebindings,clusterkopfpeerings"


def scp_pods(cluster: Cluster) -> list[dict]:
    selector = "app.kubernetes.io/component=scp,app.kubernetes.io/instance=noctis"
    return list(cluster.kubectl_json("get", "pods", "-n", NAMESPACE, "-l", selector)["items"])


def release_objects(cluster: Cluster) -> list[str]:
    """What is left of the release: anything in its namespace but the namespace's own defaults
    (and events), and its cluster-wide objects."""
    kinds = cluster.kubectl(
        "api-resources", "--namespaced=true", "--verbs=list", "-o", "name"
    ).stdout.split()
    kinds = [k for k in kinds if not k.startswith("events")]
    names = cluster.kubectl("get", ",".join(kinds), "-n", NAMESPACE, "-o", "name").stdout.split()
    defaults = {"serviceaccount/default", "configmap/kube-root-ca.crt"}
    left = [n for n in names if n not in defaults]
    cluster_wide = cluster.kubectl("get", CLUSTER_KINDS, "-o", "name").stdout.split()
    ours = [n for n in cluster_wide if "/noctis" in n]
    return left + ours


def test_helm_upgrade_with_a_changed_value_rolls_the_scp_out(cluster: Cluster) -> None:
    if not cluster.dicom:
        pytest.fail("Noctis is not installed on the cluster (no images: scripts/build-images.sh)")
    [before] = scp_pods(cluster)
    assert before["spec"]["terminationGracePeriodSeconds"] == 60
    cluster.helm(
        "upgrade", chart.RELEASE, str(chart.CHART), "--namespace", NAMESPACE,
        "--reuse-values", "--set", "quickstart.dicomNode.drainSeconds=45",
        "--wait", "--timeout=300s", timeout=330,
    )  # fmt: skip

    def rolled() -> bool:
        pods = scp_pods(cluster)
        return (
            len(pods) == 1
            and pods[0]["metadata"]["uid"] != before["metadata"]["uid"]
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in pods[0]["status"].get("conditions", [])
            )
        )

    wait.until(rolled, timeout=180, what="the SCP to roll out with the new value", interval=0.2)
    [after] = scp_pods(cluster)
    assert after["spec"]["terminationGracePeriodSeconds"] == 45
    host, port = cluster.dicom.rsplit(":", 1)
    echo = dcmtk.echoscu(int(port), calling=CALLING_AE, called="NOCTIS", host=host)
    assert echo.ok, echo.output


def test_helm_uninstall_leaves_no_orphans_and_the_retained_data_comes_back(
    cluster: Cluster, tmp_path: Path
) -> None:
    if not cluster.dicom:
        pytest.fail("Noctis is not installed on the cluster (no images: scripts/build-images.sh)")
    host, port = cluster.dicom.rsplit(":", 1)
    sent = generate_ct_series(tmp_path / "ct", slices=3, patient_id="RETAINED-1")
    stored = dcmtk.storescu(int(port), sent, calling=CALLING_AE, called="NOCTIS", host=host)
    assert stored.ok, stored.output[-2000:]

    began = time.monotonic()
    cluster.helm(
        "uninstall", chart.RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout=300s",
        timeout=330,
    )  # fmt: skip
    wait.until(
        lambda: not release_objects(cluster),
        timeout=180,
        what="the release's objects to be gone",
        interval=0.2,
    )
    print(f"\nhelm uninstall: nothing left after {time.monotonic() - began:.1f} s")
    assert release_objects(cluster) == []

    installed = chart.install(cluster)
    print(f"installed again, every pod Ready after {installed['pods_ready']:.1f} s")
    host, port = str(cluster.dicom).rsplit(":", 1)
    fetched = tmp_path / "fetched"
    got = dcmtk.getscu(
        int(port),
        {"PatientID": "RETAINED-1"},
        level="PATIENT",
        model="patient",
        calling=CALLING_AE,
        called="NOCTIS",
        output_dir=fetched,
        host=host,
    )
    assert got.ok, got.output[-2000:]
    assert {sop_instance_uid(p): dataset_sha256(p) for p in fetched.iterdir()} == {
        sop_instance_uid(p): dataset_sha256(p) for p in sent
    }
