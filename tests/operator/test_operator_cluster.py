"""The example resources on a real API server, reconciled by the operator under the chart's RBAC.

Every test has a namespace of its own with the operator in it (`cluster`); `examples` applies
the example resources there and waits until they are Ready, for the tests that edit, break
or delete them.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
import yaml
from operator_support import (
    ROOT,
    Cluster,
    operator_log_tail,
)
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from noctis.index.deletion import ConsistencyFinding
from noctis.index.models import ApplicationEntity, Facility, Patient, Study
from support import wait
from support.kube import ControlPlane

pytestmark = [pytest.mark.kube, pytest.mark.s3]

EXAMPLES = ROOT / "crds" / "examples"
CHILD_KINDS = ["configmap", "deployment", "service", "hpa", "pdb"]
POOL_SPEC = {"endpoint": "http://s3", "bucket": "b-1", "credentials": {"secretName": "s"}}


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())  # type: ignore[no-any-return]


def pool_example(cluster: Cluster, name: str = "images", **spec: Any) -> dict[str, Any]:
    doc = example("storagepool")
    doc["metadata"]["name"] = name
    doc["spec"].update(
        endpoint=f"http://{cluster.s3.endpoint}", bucket=f"{cluster.namespace}-{name}", **spec
    )
    return doc


def owner_of(obj: dict[str, Any]) -> dict[str, Any]:
    (ref,) = obj["metadata"]["ownerReferences"]
    return ref  # type: ignore[no-any-return]


def index_session(cluster: Cluster) -> Session:
    return Session(create_engine(cluster.database_url))


@pytest.fixture
def examples(cluster: Cluster) -> Cluster:
    """The example StoragePool, Archive and Facility, then DicomNode, applied and Ready."""
    cluster.apply(pool_example(cluster))
    cluster.apply(example("archive"))
    cluster.apply(example("facility"))
    cluster.wait_condition("storagepool", "images")
    cluster.wait_condition("archive", "noctis")
    cluster.wait_condition("facility", "st-mary")
    cluster.wait_condition("facility", "st-mary", type_="Synced")
    cluster.apply(example("dicomnode"))
    cluster.kubectl("wait", "--for=condition=Ready", "dicomnode/main", "--timeout=60s")
    return cluster


def test_operator_is_live_and_joined_the_peering(cluster: Cluster) -> None:
    with urllib.request.urlopen(cluster.liveness_url, timeout=5) as response:
        assert response.status == 200
    peering = json.loads(cluster.kubectl("get", "kopfpeering", "noctis", "-o", "json"))
    (peer,) = peering["status"].values()
    assert peer["lifetime"] == 60 and peer["priority"] > 0


def test_examples_become_ready(examples: Cluster) -> None:
    cluster = examples
    node = cluster.get("dicomnode", "main")
    assert node is not None
    ready = cluster.condition("dicomnode", "main")
    assert ready is not None and ready["observedGeneration"] == node["metadata"]["generation"]
    assert node["status"]["service"] == "main-scp"
    for kind in CHILD_KINDS:
        child = cluster.get(kind, "main-scp")
        assert child is not None, kind
        ref = owner_of(child)
        assert (ref["kind"], ref["name"], ref["uid"]) == (
            "DicomNode",
            "main",
            node["metadata"]["uid"],
        )
        assert ref["controller"] is True
        labels = child["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "noctis-operator"
        assert labels["app.kubernetes.io/instance"] == "main"
    assert cluster.events("main", "Created")


@pytest.mark.usefixtures("examples")
def test_more_dicomnodes_each_become_ready(cluster: Cluster) -> None:
    """kubectl apply -> Ready=True (all five children created), for five more nodes."""
    for i in range(5):
        node = example("dicomnode")
        node["metadata"]["name"] = f"lat{i}"
        node["spec"]["aeTitle"] = f"LAT{i}"
        cluster.apply(node)
        cluster.kubectl("wait", "--for=condition=Ready", f"dicomnode/lat{i}", "--timeout=60s")
        for kind in CHILD_KINDS:
            assert cluster.get(kind, f"lat{i}-scp") is not None, (kind, i)
    cluster.kubectl("delete", "dicomnode", *(f"lat{i}" for i in range(5)))


@pytest.mark.usefixtures("examples")
def test_dicomnode_children_have_the_declared_specs(cluster: Cluster) -> None:
    deployment = cluster.get("deployment", "main-scp")
    assert deployment is not None
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/noctis-pacs/noctis-scp:0.1.0"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] == 300
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["requests"] == {"cpu": "500m", "memory": "512Mi"}
    assert deployment["spec"]["replicas"] == 2  # minReplicas, then the HPA's

    service = cluster.get("service", "main-scp")
    assert service is not None
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"][0]["port"] == 104
    assert service["spec"]["loadBalancerSourceRanges"] == ["10.20.0.0/16"]
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert (
        service["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-type"]
        == "nlb"
    )
    hpa = cluster.get("hpa", "main-scp")
    assert hpa is not None
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    pdb = cluster.get("pdb", "main-scp")
    assert pdb is not None and pdb["spec"]["maxUnavailable"] == 1
    config = cluster.get("configmap", "main-scp")
    assert config is not None
    assert config["data"]["NOCTIS_AE_TITLE"] == "NOCTIS"
    assert config["data"]["NOCTIS_SCP_FACILITIES"] == "st-mary"


@pytest.mark.usefixtures("examples")
def test_archive_children_and_task_queues(cluster: Cluster) -> None:
    archive = cluster.get("archive", "noctis")
    assert archive is not None
    assert archive["status"]["taskQueues"] == ["noctis", "noctis.facility.st-mary"]
    assert archive["status"]["apiEndpoint"] == f"http://noctis-api.{cluster.namespace}.svc:80"
    api = cluster.get("deployment", "noctis-api")
    worker = cluster.get("deployment", "noctis-worker")
    assert api is not None and worker is not None
    assert api["spec"]["replicas"] == 2
    (api_container,) = api["spec"]["template"]["spec"]["containers"]
    assert api_container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (worker_container,) = worker["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in worker_container["env"]}
    assert env["NOCTIS_WORKER_QUEUES"] == "noctis,noctis.facility.st-mary"
    for name in ("noctis-api", "noctis-worker", "noctis-config"):
        kind = "configmap" if name.endswith("config") else "deployment"
        child = cluster.get(kind, name)
        assert child is not None and owner_of(child)["kind"] == "Archive"


@pytest.mark.usefixtures("examples")
def test_facility_is_in_the_registry(cluster: Cluster) -> None:
    with index_session(cluster) as session:
        facility = session.scalar(select(Facility).where(Facility.name == "st-mary"))
        assert facility is not None and facility.enabled
        assert facility.display_name == "St Mary's Hospital"
        assert facility.storage_pool == "images"
        assert facility.quota_studies == 500000
        assert facility.idp_groups == ["st-mary-radiologists"]
        titles = {ae.ae_title: ae for ae in facility.application_entities}
        assert set(titles) == {"STMARY_CT1", "STMARY_WS"}
        assert titles["STMARY_CT1"].allowed_cidrs == ["10.20.1.0/24"]
        assert titles["STMARY_CT1"].services == ["echo", "store", "commitment", "worklist", "mpps"]
        assert (titles["STMARY_WS"].host, titles["STMARY_WS"].port) == ("10.20.4.30", 11112)
    status = (cluster.get("facility", "st-mary") or {})["status"]
    assert status["applicationEntities"] == 2
    assert status["taskQueue"] == "noctis.facility.st-mary"


@pytest.mark.usefixtures("examples")
def test_bucket_has_the_declared_policies(cluster: Cluster) -> None:
    client = cluster.s3.client()
    bucket = f"{cluster.namespace}-images"
    assert client.get_bucket_versioning(bucket).status == "Enabled"
    lock = client.get_object_lock_config(bucket)
    assert (lock.mode, lock.duration, lock.duration_unit) == ("GOVERNANCE", 30, "Days")
    rules = {r.rule_id: r for r in client.get_bucket_lifecycle(bucket).rules}
    assert rules["expire-old-versions"].noncurrent_version_expiration.noncurrent_days == 90
    assert rules["abort-uploads"].abort_incomplete_multipart_upload.days_after_initiation == 2
    status = (cluster.get("storagepool", "images") or {})["status"]
    assert (status["bucket"], status["versioning"], status["objectLock"]) == (
        bucket,
        "Enabled",
        True,
    )


@pytest.mark.usefixtures("examples")
def test_dicomnode_edit_is_rolled_out(cluster: Cluster) -> None:
    before = cluster.get("deployment", "main-scp") or {}
    old_hash = before["spec"]["template"]["metadata"]["annotations"]["pacs.noctis.io/config-hash"]
    patch = {
        "spec": {
            "aeTitle": "NOCTIS2",
            "maxReplicas": 9,
            "service": {
                "annotations": {
                    "service.beta.kubernetes.io/aws-load-balancer-type": None,
                    "example.com/team": "radiology",
                },
                "loadBalancerSourceRanges": ["10.30.0.0/16"],
            },
        }
    }
    cluster.kubectl("patch", "dicomnode", "main", "--type", "merge", "-p", json.dumps(patch))

    def rolled_out() -> bool:
        config = cluster.get("configmap", "main-scp") or {}
        hpa = cluster.get("hpa", "main-scp") or {}
        service = cluster.get("service", "main-scp") or {}
        deployment = cluster.get("deployment", "main-scp") or {}
        new_hash = deployment["spec"]["template"]["metadata"]["annotations"][
            "pacs.noctis.io/config-hash"
        ]
        return (
            config["data"]["NOCTIS_AE_TITLE"] == "NOCTIS2"
            and hpa["spec"]["maxReplicas"] == 9
            and service["metadata"].get("annotations") == {"example.com/team": "radiology"}
            and service["spec"]["loadBalancerSourceRanges"] == ["10.30.0.0/16"]
            and new_hash != old_hash
        )

    wait.until(
        rolled_out,
        timeout=30,
        what="the edit to reach the children",
        context=operator_log_tail(cluster.log),
        interval=0.2,
    )
    ready = cluster.wait_condition("dicomnode", "main")
    assert ready["observedGeneration"] == 2


@pytest.mark.usefixtures("examples")
def test_deleted_children_are_recreated(cluster: Cluster) -> None:
    uids = {
        kind: (cluster.get(kind, "main-scp") or {})["metadata"]["uid"]
        for kind in ("service", "hpa", "configmap")
    }
    for kind in uids:
        cluster.kubectl("delete", kind, "main-scp")

    def recreated() -> bool:
        for kind, uid in uids.items():
            child = cluster.get(kind, "main-scp")
            if child is None or child["metadata"]["uid"] == uid:
                return False
        return True

    wait.until(
        recreated,
        timeout=30,
        what="the deleted children to come back",
        context=operator_log_tail(cluster.log),
        interval=0.2,
    )


@pytest.mark.usefixtures("examples")
def test_drift_is_corrected(cluster: Cluster) -> None:
    patch = {"spec": {"template": {"spec": {"terminationGracePeriodSeconds": 5}}}}
    cluster.kubectl("patch", "deployment", "main-scp", "--type", "merge", "-p", json.dumps(patch))
    cluster.kubectl(
        "patch", "hpa", "main-scp", "--type", "merge", "-p", '{"spec": {"minReplicas": 1}}'
    )

    def restored() -> bool:
        deployment = cluster.get("deployment", "main-scp") or {}
        hpa = cluster.get("hpa", "main-scp") or {}
        return (
            deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 300
            and hpa["spec"]["minReplicas"] == 2
        )

    wait.until(
        restored,
        timeout=30,
        what="drift to be corrected",
        context=operator_log_tail(cluster.log),
        interval=0.2,
    )
    assert cluster.events("main", "DriftCorrected")


@pytest.mark.usefixtures("examples")
def test_endpoint_comes_from_the_load_balancer(cluster: Cluster) -> None:
    status = {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}}
    cluster.kubectl(
        "patch",
        "service",
        "main-scp",
        "--subresource",
        "status",
        "--type",
        "merge",
        "-p",
        json.dumps(status),
    )
    wait.until(
        lambda: (
            (cluster.get("dicomnode", "main") or {})["status"]["endpoint"] == "203.0.113.10:104"
        ),
        timeout=30,
        what="the endpoint in the DicomNode status",
        context=operator_log_tail(cluster.log),
        interval=0.2,
    )
    printed = cluster.kubectl("get", "dicomnode", "main")
    assert "203.0.113.10:104" in printed and "NOCTIS" in printed


@pytest.mark.usefixtures("examples")
def test_archive_and_pool_changes_reach_the_dicomnode(cluster: Cluster) -> None:
    def scp_env() -> dict[str, Any]:
        deployment = cluster.get("deployment", "main-scp") or {}
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("valueFrom") for e in container["env"]}

    cluster.kubectl(
        "patch",
        "archive",
        "noctis",
        "--type",
        "merge",
        "-p",
        '{"spec": {"database": {"name": "noctis-database-v2"}}}',
    )
    wait.until(
        lambda: scp_env()["NOCTIS_DATABASE_URL"]["secretKeyRef"]["name"] == "noctis-database-v2",
        timeout=30,
        what="the Archive's database Secret in the SCP pods",
        context=operator_log_tail(cluster.log),
        interval=0.2,
    )
    cluster.kubectl(
        "patch",
        "storagepool",
        "images",
        "--type",
        "merge",
        "-p",
        '{"spec": {"region": "us-east-1"}}',
    )
    wait.until(
        lambda: (
            (cluster.get("configmap", "noctis-config") or {})["data"].get("NOCTIS_S3_REGION")
            == "us-east-1"
        ),
        timeout=30,
        what="the pool's region in the Archive's settings",
        context=operator_log_tail(cluster.log),
        interval=0.2,
    )
    cluster.wait_condition("storagepool", "images")
    cluster.wait_condition("dicomnode", "main")


@pytest.mark.usefixtures("examples")
def test_a_facility_pool_reaches_every_pod(cluster: Cluster) -> None:
    """A Facility naming another StoragePool: every pod of the Archive (API, worker, SCP)
    gets its endpoint and bucket, and its credentials from the pool's Secret only."""
    second = pool_example(cluster, "second", credentials={"secretName": "second-s3"})
    secret = cluster.get("secret", "noctis-s3") or {}
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "second-s3"},
            "data": secret["data"],
        }
    )
    cluster.apply(second)
    cluster.wait_condition("storagepool", "second")
    cluster.kubectl(
        "patch",
        "facility",
        "st-mary",
        "--type",
        "merge",
        "-p",
        '{"spec": {"storagePool": "second"}}',
    )
    prefix = "NOCTIS_STORAGE_POOLS__second__"

    def config() -> dict[str, str]:
        return dict((cluster.get("configmap", "noctis-config") or {}).get("data") or {})

    wait.until(
        lambda: config().get(f"{prefix}BUCKET") == f"{cluster.namespace}-second",
        timeout=30,
        what="the second pool in the Archive's settings",
        context=operator_log_tail(cluster.log),
        interval=0.2,
    )
    assert config()[f"{prefix}ENDPOINT"] == cluster.s3.endpoint
    assert config()["NOCTIS_STORAGE_POOL"] == "images"
    assert not any(key.endswith(("ACCESS_KEY", "SECRET_KEY")) for key in config())

    def env(deployment: str) -> dict[str, Any]:
        body = cluster.get("deployment", deployment) or {}
        (container,) = body["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("valueFrom") for e in container["env"]}

    for deployment in ("noctis-api", "noctis-worker", "main-scp"):
        found = wait.until(
            lambda deployment=deployment: env(deployment).get(f"{prefix}SECRET_KEY"),
            timeout=30,
            what=f"the second pool's credentials in {deployment}",
            context=operator_log_tail(cluster.log),
            interval=0.2,
        )
        assert found["secretKeyRef"]["name"] == "second-s3"
        assert env(deployment)[f"{prefix}ACCESS_KEY"]["secretKeyRef"]["name"] == "second-s3"


@pytest.mark.usefixtures("examples")
def test_foreign_object_is_refused(cluster: Cluster) -> None:
    cluster.kubectl("create", "configmap", "ct-scp", "--from-literal=owner=someone-else")
    node = example("dicomnode")
    node["metadata"]["name"] = "ct"
    node["spec"]["aeTitle"] = "CT_NODE"
    cluster.apply(node)
    ready = cluster.wait_condition("dicomnode", "ct", "False", reason="ChildConflict")
    assert "ConfigMap ct-scp already exists and is not owned by DicomNode ct" in ready["message"]
    assert cluster.events("ct", "ChildConflict")
    config = cluster.get("configmap", "ct-scp") or {}
    assert config["data"] == {"owner": "someone-else"}  # untouched
    cluster.kubectl("delete", "configmap", "ct-scp")
    cluster.wait_condition("dicomnode", "ct", timeout=30)
    cluster.kubectl("delete", "dicomnode", "ct")


@pytest.mark.parametrize(
    ("kind", "spec", "message"),
    [
        ("DicomNode", {"aeTitle": "BACK\\SLASH"}, "spec.aeTitle"),
        ("DicomNode", {"aeTitle": "A_VERY_LONG_AE_TITLE"}, "spec.aeTitle"),
        ("DicomNode", {"aeTitle": " LEAD"}, "spec.aeTitle"),
        ("DicomNode", {"aeTitle": "OK", "port": 70000}, "spec.port"),
        ("DicomNode", {"aeTitle": "OK", "minReplicas": 5, "maxReplicas": 2}, "maxReplicas"),
        ("DicomNode", {"aeTitle": "OK", "service": {"type": "Magic"}}, "spec.service.type"),
        (
            "DicomNode",
            {"aeTitle": "OK", "service": {"loadBalancerSourceRanges": ["10.1/99"]}},
            "loadBalancerSourceRanges",
        ),
        (
            "Facility",
            {"applicationEntities": [{"aeTitle": "X", "allowedCIDRs": ["nope"]}]},
            "allowedCIDRs",
        ),
        (
            "Facility",
            {"applicationEntities": [{"aeTitle": "X", "services": ["print"]}]},
            "services",
        ),
        ("StoragePool", {**POOL_SPEC, "endpoint": "s3.example.org"}, "spec.endpoint"),
        ("StoragePool", {**POOL_SPEC, "deletionPolicy": "Purge"}, "spec.deletionPolicy"),
        (
            "StoragePool",
            {**POOL_SPEC, "versioning": False, "objectLock": {"enabled": True}},
            "object lock needs versioning",
        ),
    ],
)
def test_schema_rejects_what_it_can_tell(
    kube: ControlPlane, kube_namespace: str, kind: str, spec: dict[str, Any], message: str
) -> None:
    doc = {
        "apiVersion": "pacs.noctis.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "bad"},
        "spec": spec,
    }
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
    assert message in result.stderr


@pytest.mark.usefixtures("examples")
def test_invalid_specs_are_reported_not_crashed_on(cluster: Cluster) -> None:
    # Duplicate AE titles: the model refuses them, the schema cannot tell.
    twin = {
        "apiVersion": "pacs.noctis.io/v1alpha1",
        "kind": "Facility",
        "metadata": {"name": "twins"},
        "spec": {"applicationEntities": [{"aeTitle": "TWIN"}, {"aeTitle": "TWIN"}]},
    }
    # An AE title another facility already registered.
    thief = {
        "apiVersion": "pacs.noctis.io/v1alpha1",
        "kind": "Facility",
        "metadata": {"name": "thief"},
        "spec": {"applicationEntities": [{"aeTitle": "STMARY_CT1"}]},
    }
    orphan = example("dicomnode")
    orphan["metadata"]["name"] = "orphan"
    orphan["spec"].update(archive="missing", aeTitle="ORPHAN")
    no_secret = pool_example(cluster, "nosecret", credentials={"secretName": "absent"})
    for doc in (twin, thief, orphan, no_secret):
        cluster.apply(doc)

    cases = [
        ("facility", "twins", "InvalidSpec", "AE titles listed twice: TWIN"),
        ("facility", "thief", "Conflict", "STMARY_CT1 (facility st-mary)"),
        ("dicomnode", "orphan", "ArchiveNotFound", "Archive missing not found"),
        ("storagepool", "nosecret", "SecretNotFound", "Secret absent not found"),
    ]
    for kind, name, reason, text in cases:
        cond = cluster.wait_condition(kind, name, "False", reason=reason)
        assert text in cond["message"], cond
        wait.until(
            lambda name=name, reason=reason: cluster.events(name, reason),
            timeout=15,
            what=f"a {reason} Event",
            context=operator_log_tail(cluster.log),
            interval=0.2,
        )
    with urllib.request.urlopen(cluster.liveness_url, timeout=5) as response:
        assert response.status == 200
    with index_session(cluster) as session:
        assert session.scalar(select(Facility).where(Facility.name == "thief")) is None

    # Fixing the spec makes it Ready.
    cluster.kubectl(
        "patch",
        "facility",
        "twins",
        "--type",
        "merge",
        "-p",
        '{"spec": {"applicationEntities": [{"aeTitle": "TWIN"}]}}',
    )
    cluster.wait_condition("facility", "twins")
    for kind, name in (("facility", "thief"), ("dicomnode", "orphan"), ("storagepool", "nosecret")):
        cluster.kubectl("delete", kind, name)


@pytest.mark.usefixtures("examples")
def test_facility_edit_usage_and_removal(cluster: Cluster) -> None:
    patch = {
        "spec": {
            "applicationEntities": [
                {"aeTitle": "STMARY_MR1", "host": "10.20.1.16", "port": 104, "services": ["store"]},
            ],
            "quota": {"maxBytes": 4096},
        }
    }
    cluster.kubectl("patch", "facility", "st-mary", "--type", "merge", "-p", json.dumps(patch))

    def registry_titles() -> set[str]:
        with index_session(cluster) as session:
            rows = session.scalars(
                select(ApplicationEntity.ae_title).join(Facility).where(Facility.name == "st-mary")
            )
            return set(rows)

    wait.until(
        lambda: registry_titles() == {"STMARY_MR1"},
        timeout=30,
        what="the registry to follow",
        context=operator_log_tail(cluster.log),
        interval=0.2,
    )

    with index_session(cluster) as session, session.begin():
        facility = session.scalar(select(Facility).where(Facility.name == "st-mary"))
        assert facility is not None
        patient = Patient(facility_id=facility.id, patient_id="P1")
        session.add(patient)
        session.flush()
        session.add(
            Study(
                facility_id=facility.id,
                patient_pk=patient.id,
                study_instance_uid="1.2.3",
                size_bytes=4096,
            )
        )
    wait.until(
        lambda: (
            (
                (cluster.get("facility", "st-mary") or {})["status"]["studies"],
                (cluster.get("facility", "st-mary") or {})["status"]["bytes"],
                (cluster.get("facility", "st-mary") or {})["status"]["usedBytes"],
            )
            == (1, 4096, 4096)
        ),
        timeout=30,
        what="the facility's usage in its status",
        context=operator_log_tail(cluster.log),
        interval=0.2,
    )
    # At its maxBytes quota: the condition says so, with the usage.
    quota = cluster.wait_condition("facility", "st-mary", "True", type_="QuotaExceeded")
    assert quota["reason"] == "AtQuota" and "4096 bytes of maxBytes 4096" in quota["message"]

    # The consistency check found an instance whose object is missing: the status says so.
    assert cluster.wait_condition("facility", "st-mary", "True", type_="Consistent")
    with index_session(cluster) as session, session.begin():
        facility = session.scalar(select(Facility).where(Facility.name == "st-mary"))
        assert facility is not None
        session.add(
            ConsistencyFinding(
                kind="missing", object_key="st-mary/1.2.3/x.dcm", facility_id=facility.id
            )
        )
    consistent = cluster.wait_condition("facility", "st-mary", "False", type_="Consistent")
    assert consistent["reason"] == "ObjectsMissing" and "1 indexed" in consistent["message"]
    status = (cluster.get("facility", "st-mary") or {})["status"]
    assert status["consistency"] == {"missingObjects": 1, "orphansRemoved": 0}

    cluster.kubectl("delete", "facility", "st-mary", "--timeout=30s")
    with index_session(cluster) as session:
        facility = session.scalar(select(Facility).where(Facility.name == "st-mary"))
        assert facility is not None and not facility.enabled  # disabled, not deleted
        assert session.scalar(select(Study.study_instance_uid)) == "1.2.3"
    wait.until(
        lambda: (cluster.get("archive", "noctis") or {})["status"]["taskQueues"] == ["noctis"],
        timeout=30,
        what="the worker queues to follow",
        context=operator_log_tail(cluster.log),
        interval=0.2,
    )


@pytest.mark.usefixtures("examples")
def test_storagepool_usage_and_retain(cluster: Cluster) -> None:
    import io

    client = cluster.s3.client()
    bucket = f"{cluster.namespace}-images"
    client.put_object(bucket, "s/1.dcm", io.BytesIO(b"x" * 1000), 1000)
    client.put_object(bucket, "s/2.dcm", io.BytesIO(b"y" * 24), 24)
    wait.until(
        lambda: (
            (
                (cluster.get("storagepool", "images") or {})["status"].get("usedBytes"),
                (cluster.get("storagepool", "images") or {})["status"].get("objects"),
            )
            == (1024, 2)
        ),
        timeout=30,
        what="usage in the StoragePool status",
        context=operator_log_tail(cluster.log),
        interval=0.2,
    )
    cluster.kubectl(
        "patch",
        "storagepool",
        "images",
        "--type",
        "merge",
        "-p",
        '{"spec": {"quota": {"maxBytes": 1000}}}',
    )
    cluster.wait_condition("storagepool", "images", type_="QuotaExceeded")

    cluster.kubectl("delete", "storagepool", "images", "--timeout=30s")
    assert client.bucket_exists(bucket)  # Retain
    assert [o.object_name for o in client.list_objects(bucket, prefix="s/", recursive=True)] == [
        "s/1.dcm",
        "s/2.dcm",
    ]


def test_storagepool_delete_policy_removes_the_bucket(cluster: Cluster) -> None:
    import io

    doc = pool_example(
        cluster,
        "scratch",
        deletionPolicy="Delete",
        objectLock={"enabled": True, "mode": "GOVERNANCE", "days": 1},
    )
    cluster.apply(doc)
    cluster.wait_condition("storagepool", "scratch")
    bucket = doc["spec"]["bucket"]
    client = cluster.s3.client()
    client.put_object(bucket, "tmp/1.dcm", io.BytesIO(b"z" * 10), 10)
    client.put_object(bucket, "tmp/1.dcm", io.BytesIO(b"w" * 10), 10)
    pool = cluster.get("storagepool", "scratch") or {}
    assert "pacs.noctis.io/finalizer" in pool["metadata"]["finalizers"]
    cluster.kubectl("delete", "storagepool", "scratch", "--timeout=30s")
    assert not client.bucket_exists(bucket)


@pytest.mark.usefixtures("examples")
def test_deleting_a_dicomnode_garbage_collects_its_children(cluster: Cluster) -> None:
    cluster.kubectl("delete", "dicomnode", "main")

    def gone() -> bool:
        return all(cluster.get(kind, "main-scp") is None for kind in CHILD_KINDS)

    wait.until(
        gone,
        timeout=60,
        what="garbage collection of the DicomNode's children",
        context=operator_log_tail(cluster.log),
        interval=0.2,
    )
    assert cluster.get("deployment", "noctis-api") is not None  # the Archive's stay
