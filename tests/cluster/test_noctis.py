"""Noctis on the one-node cluster, installed by the chart's quickstart from the images built here:
pods Ready through their own probes with clean logs, a CT sent by dcmtk through the DicomNode's
LoadBalancer and fetched back byte-identical, DICOMweb through the API's Service.

The tests run in file order and share the CT the store test sends (one 300-slice series).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from email.parser import BytesParser
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, StoragePresentationContexts, _config, build_context, evt

from support import dcmtk, wait
from support.cluster import chart
from support.cluster import layout as L
from support.cluster.cluster import Cluster
from support.dicomdata import (
    dataset_bytes,
    dataset_sha256,
    generate_ct_series,
    sop_instance_uid,
)
from support.web import login

pytestmark = pytest.mark.dcmtk

NAMESPACE = chart.NAMESPACE
COMPONENTS = ("operator", "scp", "api", "worker", "transfer")
CALLING_AE = "CT_SCANNER_1"  # any AE title: the quickstart Facility takes any from this machine
# Log lines that mean something went wrong, whatever the component's log format.
TROUBLE = re.compile(r"\b(ERROR|CRITICAL|FATAL|Traceback|Exception)\b")


def noctis(cluster: Cluster) -> tuple[str, int]:
    if not cluster.dicom or not cluster.web:
        pytest.fail("Noctis is not installed on the cluster (no images: scripts/build-images.sh)")
    host, port = cluster.dicom.rsplit(":", 1)
    return host, int(port)


def component_pods(cluster: Cluster, component: str) -> list[dict]:
    selector = f"app.kubernetes.io/component={component},app.kubernetes.io/instance=noctis"
    return list(cluster.kubectl_json("get", "pods", "-n", NAMESPACE, "-l", selector)["items"])


def troubled_log_lines(cluster: Cluster) -> dict[str, list[str]]:
    found = {}
    for component in COMPONENTS:
        for pod in component_pods(cluster, component):
            name = pod["metadata"]["name"]
            statuses = pod.get("status", {}).get("containerStatuses") or []
            if not any("waiting" not in status.get("state", {}) for status in statuses):
                continue  # no container has started yet (a pod being created): no log
            log = cluster.kubectl("logs", "-n", NAMESPACE, name, "--all-containers").stdout
            lines = [line for line in log.splitlines() if TROUBLE.search(line)]
            if lines:
                found[name] = lines[:20]
    return found


def header_value(path: Path, keyword: str) -> str:
    return str(dcmread(path, stop_before_pixels=True)[keyword].value)


def multipart_parts(response: httpx.Response) -> list[bytes]:
    """The bodies of a multipart/related response."""
    head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser().parsebytes(head + response.content)
    return [part.get_payload(decode=True) for part in message.get_payload()]


def admin_client(cluster: Cluster) -> Iterator[httpx.Client]:
    secret = cluster.kubectl_json("get", "secret", "-n", NAMESPACE, "noctis-admin")
    password = base64.b64decode(secret["data"]["password"]).decode()
    with httpx.Client(base_url=str(cluster.web), timeout=60.0) as client:
        login(client, "admin", password)
        yield client


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return generate_ct_series(tmp_path_factory.mktemp("ct"), slices=300)


@pytest.fixture(scope="module")
def web(cluster: Cluster) -> Iterator[httpx.Client]:
    noctis(cluster)
    yield from admin_client(cluster)


def test_every_noctis_pod_is_ready_through_its_own_probes(cluster: Cluster) -> None:
    noctis(cluster)
    for component in COMPONENTS:
        pods = component_pods(cluster, component)
        assert pods, f"no {component} pod"
        for pod in pods:
            name = pod["metadata"]["name"]
            [container] = pod["spec"]["containers"]
            assert container.get("livenessProbe"), f"{name} has no liveness probe"
            assert container.get("readinessProbe"), f"{name} has no readiness probe"
            assert pod["spec"]["securityContext"].get("runAsNonRoot") or container[
                "securityContext"
            ].get("runAsNonRoot"), f"{name} may run as root"
            conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
            assert conditions["Ready"] == "True", (name, pod["status"])
            for status in pod["status"]["containerStatuses"]:
                assert status["ready"] and status["restartCount"] == 0, (name, status)
    assert troubled_log_lines(cluster) == {}


def test_a_ct_stored_through_the_loadbalancer_comes_back_byte_identical(
    cluster: Cluster, ct_series: list[Path], tmp_path: Path
) -> None:
    host, port = noctis(cluster)
    stored = dcmtk.storescu(
        port, ct_series, calling=CALLING_AE, called="NOCTIS", host=host, timeout=600
    )
    assert stored.ok, stored.output[-2000:]
    study = header_value(ct_series[0], "StudyInstanceUID")

    found = dcmtk.findscu(
        port,
        {"StudyInstanceUID": study, "NumberOfStudyRelatedInstances": "", "PatientID": ""},
        level="STUDY",
        calling=CALLING_AE,
        called="NOCTIS",
        workdir=tmp_path,
        host=host,
    )
    assert found.ok, found.output[-2000:]
    [response] = found.responses
    assert response.PatientID == "CT-SERIES-1"
    assert int(response.NumberOfStudyRelatedInstances) == len(ct_series)

    fetched = tmp_path / "fetched"
    got = dcmtk.getscu(
        port,
        {"StudyInstanceUID": study},
        level="STUDY",
        calling=CALLING_AE,
        called="NOCTIS",
        output_dir=fetched,
        host=host,
    )
    assert got.ok, got.output[-2000:]
    sent = {sop_instance_uid(p): dataset_sha256(p) for p in ct_series}
    received = {sop_instance_uid(p): dataset_sha256(p) for p in fetched.iterdir()}
    assert received == sent


@contextmanager
def move_destination(cluster: Cluster, ae_title: str) -> Iterator[tuple[dict[str, bytes], int]]:
    """A storage SCP on the node's address (reachable from the pods only) registered in the
    quickstart Facility as ``ae_title``; yields (SOP Instance UID -> data set bytes, port).
    It accepts explicit VR little endian only: the CT's own syntax, so what arrives must be the
    stored bytes, unconverted."""
    received: dict[str, bytes] = {}

    def on_store(event: evt.Event) -> int:
        received[str(event.request.AffectedSOPInstanceUID)] = event.encoded_dataset(
            include_meta=False
        )
        return 0x0000

    # An in-process Noctis SCP of an earlier test in this session spools what it receives
    # (a process-wide pynetdicom setting): this plain AE wants the data set in memory.
    spooled = _config.STORE_RECV_CHUNKED_DATASET
    _config.STORE_RECV_CHUNKED_DATASET = False
    ae = AE(ae_title=ae_title)
    ae.supported_contexts = [
        build_context(context.abstract_syntax, [ExplicitVRLittleEndian])
        for context in StoragePresentationContexts
    ]
    server = ae.start_server(
        (L.NODE_IP, 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    port = int(server.server_address[1])
    entry = {"aeTitle": ae_title, "host": L.NODE_IP, "port": port, "services": ["store"]}
    path = "/spec/applicationEntities"
    entries = cluster.kubectl_json("get", "facility", "-n", NAMESPACE, "quickstart")["spec"][
        "applicationEntities"
    ]
    patch = [{"op": "add", "path": f"{path}/-", "value": entry}]
    cluster.kubectl(
        "patch", "facility", "quickstart", "-n", NAMESPACE, "--type=json", "-p", json.dumps(patch)
    )
    try:
        yield received, port
    finally:
        undo = [{"op": "remove", "path": f"{path}/{len(entries)}"}]
        cluster.kubectl(
            "patch", "facility", "quickstart", "-n", NAMESPACE, "--type=json",
            "-p", json.dumps(undo), check=False,
        )  # fmt: skip
        server.shutdown()
        _config.STORE_RECV_CHUNKED_DATASET = spooled


def test_movescu_sends_the_ct_to_a_registered_destination_byte_identical(
    cluster: Cluster, ct_series: list[Path]
) -> None:
    host, port = noctis(cluster)
    study = header_value(ct_series[0], "StudyInstanceUID")
    with move_destination(cluster, "MOVE_DEST") as (received, _port):
        tries: list[dcmtk.ToolResult] = []

        def move() -> dcmtk.ToolResult | None:
            moved = dcmtk.movescu(
                port,
                {"StudyInstanceUID": study},
                destination="MOVE_DEST",
                level="STUDY",
                calling=CALLING_AE,
                called="NOCTIS",
                host=host,
            )
            tries.append(moved)
            return moved if moved.ok and dcmtk.final_status(moved.output) == 0x0000 else None

        moved = wait.until(  # the operator syncs the Facility within seconds
            move,
            timeout=30,
            what="a C-MOVE to the registered destination",
            interval=1,
            context=lambda: tries[-1].output[-2000:],
        )
        assert dcmtk.suboperation_counts(moved.output).get("completed") == len(ct_series)
    sent = {sop_instance_uid(p): hashlib.sha256(dataset_bytes(p)).hexdigest() for p in ct_series}
    assert {uid: hashlib.sha256(data).hexdigest() for uid, data in received.items()} == sent


def test_dicomweb_through_the_api_service_serves_the_ct(
    web: httpx.Client, ct_series: list[Path]
) -> None:
    study = header_value(ct_series[0], "StudyInstanceUID")
    series = header_value(ct_series[0], "SeriesInstanceUID")
    studies = web.get("/dicom-web/studies", params={"StudyInstanceUID": study})
    assert studies.status_code == 200, studies.text
    [found] = studies.json()
    assert found["00201208"]["Value"] == [len(ct_series)]  # NumberOfStudyRelatedInstances

    instances = web.get(f"/dicom-web/studies/{study}/series/{series}/instances")
    assert instances.status_code == 200
    assert len(instances.json()) == len(ct_series)

    first = ct_series[0]
    sop = sop_instance_uid(first)
    response = web.get(
        f"/dicom-web/studies/{study}/series/{series}/instances/{sop}",
        headers={"Accept": 'multipart/related; type="application/dicom"'},
    )
    assert response.status_code == 200, response.text[:500]
    [part] = multipart_parts(response)
    retrieved = first.parent.parent / "retrieved.dcm"
    retrieved.write_bytes(part)
    assert dataset_sha256(retrieved) == dataset_sha256(first)


def test_noctis_logs_stay_clean_after_the_traffic(cluster: Cluster) -> None:
    noctis(cluster)
    assert troubled_log_lines(cluster) == {}
