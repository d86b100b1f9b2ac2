"""Builders: specs in, object dicts out, checked without a cluster."""

from __future__ import annotations

from typing import Any

import pytest

from noctis.operator.builders import archive as arc
from noctis.operator.builders import dicomnode as dn
from noctis.operator.builders.common import CONFIG_HASH
from noctis.settings import Settings
from noctis.specs.archive import ArchiveSpec
from noctis.specs.dicomnode import DicomNodeSpec
from noctis.specs.storagepool import StoragePoolSpec

IMAGES = arc.Images(scp="reg/noctis-scp:1", api="reg/noctis-api:1", worker="reg/noctis-worker:1")
POOL = StoragePoolSpec.model_validate(
    {
        "endpoint": "http://s3.store:8333",
        "bucket": "images",
        "credentials": {"secretName": "s3", "accessKeyKey": "id", "secretKeyKey": "key"},
    }
)
ARCHIVE = ArchiveSpec.model_validate(
    {
        "storagePool": "images",
        "database": {"name": "db", "key": "url"},
        "broker": {"name": "redis", "key": "url"},
        "api": {"secretKey": {"name": "session", "key": "key"}},
        "indexSecretsKey": {"name": "index-secrets", "key": "key"},
    }
)


def context() -> arc.ArchiveContext:
    return arc.archive_context("noctis", "pacs", ARCHIVE, POOL)


def node(**spec: Any) -> DicomNodeSpec:
    return DicomNodeSpec.model_validate({"aeTitle": "NOCTIS", **spec})


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_every_dicomnode_child_is_labelled_and_named() -> None:
    objs = dn.build_all("main", "pacs", node(), context(), IMAGES)
    assert [o["kind"] for o in objs] == [
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]
    for obj in objs:
        meta = obj["metadata"]
        assert (meta["name"], meta["namespace"]) == ("main-scp", "pacs")
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "noctis-operator"
        assert meta["labels"]["app.kubernetes.io/component"] == "scp"
        assert meta["labels"]["pacs.noctis.io/dicomnode"] == "main"
        assert "ownerReferences" not in meta  # added by the ensure step (kopf.adopt)


def test_scp_deployment() -> None:
    deployment = dn.build_deployment("main", "pacs", node(drainSeconds=120), context(), IMAGES)
    spec = deployment["spec"]
    assert "replicas" not in spec  # the HPA owns it
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert pod["terminationGracePeriodSeconds"] == 120
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["image"] == "reg/noctis-scp:1"
    assert container["command"] == ["noctis", "scp"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["envFrom"] == [
        {"configMapRef": {"name": "noctis-config"}},
        {"configMapRef": {"name": "main-scp"}},
    ]
    env = env_of(container)
    assert env["NOCTIS_DATABASE_URL"] == {"secretKeyRef": {"name": "db", "key": "url"}}
    assert env["NOCTIS_S3_ACCESS_KEY"] == {"secretKeyRef": {"name": "s3", "key": "id"}}
    assert env["NOCTIS_BROKER_URL"] == {"secretKeyRef": {"name": "redis", "key": "url"}}
    assert "NOCTIS_INDEX_SECRETS_KEY" not in env  # the SCP faces the modalities: it needs none
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }


def test_scp_config_reaches_pods_through_a_hash() -> None:
    config = dn.build_config_map("main", "pacs", node(maxAssociations=8, facilities=["a", "b"]))
    assert config["data"]["NOCTIS_AE_TITLE"] == "NOCTIS"
    assert config["data"]["NOCTIS_SCP_PORT"] == "11112"
    assert config["data"]["NOCTIS_HEALTH_PORT"] == "8081"
    assert config["data"]["NOCTIS_MAX_ASSOCIATIONS"] == "8"
    assert config["data"]["NOCTIS_SCP_FACILITIES"] == "a,b"

    def pod_hash(spec: DicomNodeSpec) -> str:
        deployment = dn.build_deployment("main", "pacs", spec, context(), IMAGES)
        return str(deployment["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH])

    assert pod_hash(node()) == pod_hash(node())
    assert pod_hash(node()) != pod_hash(node(aeTitle="OTHER"))


def test_tls_secret_is_mounted() -> None:
    spec = node(tls={"secretName": "scp-tls", "requireClientCertificate": True})
    deployment = dn.build_deployment("main", "pacs", spec, context(), IMAGES)
    pod = deployment["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "scp-tls"}} in pod["volumes"]
    assert dn.node_config(spec)["NOCTIS_TLS_CA_FILE"].endswith("ca.crt")


def test_load_balancer_service_passes_settings_through() -> None:
    spec = node(
        service={
            "port": 104,
            "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"},
            "loadBalancerSourceRanges": ["10.20.0.0/16"],
            "loadBalancerClass": "example.com/lb",
        }
    )
    service = dn.build_service("main", "pacs", spec)
    assert service["metadata"]["annotations"] == {
        "service.beta.kubernetes.io/aws-load-balancer-type": "nlb"
    }
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert service["spec"]["loadBalancerSourceRanges"] == ["10.20.0.0/16"]
    assert service["spec"]["loadBalancerClass"] == "example.com/lb"
    assert service["spec"]["ports"] == [
        {"name": "dicom", "port": 104, "targetPort": "dicom", "protocol": "TCP"}
    ]


@pytest.mark.parametrize("service_type", ["LoadBalancer", "NodePort"])
def test_an_outside_facing_service_keeps_client_addresses(service_type: str) -> None:
    spec = node(service={"type": service_type})
    service = dn.build_service("main", "pacs", spec)
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert "NOCTIS_MAX_CONNECTIONS_PER_ADDRESS" not in dn.node_config(spec)  # the SCP's cap


@pytest.mark.parametrize("service_type", ["LoadBalancer", "NodePort"])
def test_cluster_traffic_policy_turns_the_per_address_cap_off(service_type: str) -> None:
    spec = node(service={"type": service_type, "externalTrafficPolicy": "Cluster"})
    assert dn.build_service("main", "pacs", spec)["spec"]["externalTrafficPolicy"] == "Cluster"
    # Callers arrive from the nodes' addresses: a cap per address would count a whole node.
    assert dn.node_config(spec)["NOCTIS_MAX_CONNECTIONS_PER_ADDRESS"] == "0"
    internal = node(service={"type": "ClusterIP", "externalTrafficPolicy": "Cluster"})
    assert "NOCTIS_MAX_CONNECTIONS_PER_ADDRESS" not in dn.node_config(internal)


def test_cluster_ip_service_has_no_load_balancer_fields() -> None:
    service = dn.build_service("main", "pacs", node(service={"type": "ClusterIP"}))
    assert set(service["spec"]) == {"type", "selector", "ports"}


def test_hpa_and_pdb() -> None:
    hpa = dn.build_hpa("main", "pacs", node(minReplicas=2, maxReplicas=6, targetCPUUtilization=60))
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "main-scp",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    target = hpa["spec"]["metrics"][0]["resource"]["target"]
    assert target == {"type": "Utilization", "averageUtilization": 60}
    pdb = dn.build_pdb("main", "pacs")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "main"


@pytest.mark.parametrize(
    ("ingress", "endpoint"),
    [
        ([], ""),
        ([{"ip": "203.0.113.7"}], "203.0.113.7:104"),
        ([{"hostname": "lb.example.org"}], "lb.example.org:104"),
    ],
)
def test_external_endpoint(ingress: list[dict[str, str]], endpoint: str) -> None:
    service = {"status": {"loadBalancer": {"ingress": ingress}}}
    assert dn.external_endpoint(service, 104) == endpoint
    assert dn.external_endpoint(None, 104) == ""


def test_archive_children() -> None:
    objs = arc.build_all(context(), ARCHIVE, IMAGES, ["st-mary", "north"])
    names = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert names == [
        ("ConfigMap", "noctis-config"),
        ("Deployment", "noctis-api"),
        ("Service", "noctis-api"),
        ("PodDisruptionBudget", "noctis-api"),
        ("Deployment", "noctis-worker"),
        ("Deployment", "noctis-transfer"),
    ]
    config = objs[0]["data"]
    assert config["NOCTIS_STORAGE_BACKEND"] == "s3"
    assert config["NOCTIS_S3_ENDPOINT"] == "s3.store:8333"
    assert config["NOCTIS_S3_SECURE"] == "false"
    assert config["NOCTIS_S3_BUCKET"] == "images"

    api = objs[1]["spec"]
    assert api["replicas"] == 2
    (api_container,) = api["template"]["spec"]["containers"]
    assert api_container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert env_of(api_container)["NOCTIS_SECRET_KEY"] == {
        "secretKeyRef": {"name": "session", "key": "key"}
    }
    assert "NOCTIS_ADMIN_PASSWORD" not in env_of(api_container)
    # The key sealing REST-set webhook secrets: the API seals them, the workers open them.
    sealing_key = {"secretKeyRef": {"name": "index-secrets", "key": "key"}}
    for deployment in (objs[1], objs[4], objs[5]):
        (pod_container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert env_of(pod_container)["NOCTIS_INDEX_SECRETS_KEY"] == sealing_key
    (worker_container,) = objs[4]["spec"]["template"]["spec"]["containers"]
    assert worker_container["command"] == ["noctis", "worker"]
    assert worker_container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert env_of(worker_container)["NOCTIS_WORKER_QUEUES"] == (
        "noctis,noctis.facility.north,noctis.facility.st-mary"
    )
    # Transfers run apart, following every destination's queue (no fixed list to roll out).
    transfer = objs[5]["spec"]
    assert transfer["replicas"] == 1
    (transfer_container,) = transfer["template"]["spec"]["containers"]
    assert transfer_container["command"] == ["noctis", "worker"]
    assert env_of(transfer_container)["NOCTIS_WORKER_ROLE"] == "transfers"
    assert "NOCTIS_WORKER_QUEUES" not in env_of(transfer_container)
    assert transfer["selector"] != objs[4]["spec"]["selector"]  # pods of one never the other's


def test_autoscaled_deployments_leave_replicas_to_the_scaler() -> None:
    spec = ArchiveSpec.model_validate(
        {
            "storagePool": "images",
            "database": {"name": "db", "key": "url"},
            "worker": {"autoscale": {"minReplicas": 2, "maxReplicas": 6}},
            "transfers": {"autoscale": {"minReplicas": 0, "maxReplicas": 3}},
        }
    )
    ctx = arc.archive_context("noctis", "pacs", spec, POOL)
    assert "replicas" not in arc.build_worker_deployment(ctx, spec, IMAGES, [])["spec"]
    assert "replicas" not in arc.build_transfer_deployment(ctx, spec, IMAGES)["spec"]
    assert arc.initial_replicas("noctis", spec) == {"noctis-worker": 2, "noctis-transfer": 0}


def test_archive_admin_password_reaches_the_api_only() -> None:
    spec = ArchiveSpec.model_validate(
        {
            "storagePool": "images",
            "database": {"name": "db", "key": "url"},
            "api": {"adminPassword": {"name": "noctis-admin", "key": "password"}},
        }
    )
    ctx = arc.archive_context("noctis", "pacs", spec, POOL)
    (api_container,) = arc.build_api_deployment(ctx, spec, IMAGES)["spec"]["template"]["spec"][
        "containers"
    ]
    assert env_of(api_container)["NOCTIS_ADMIN_PASSWORD"] == {
        "secretKeyRef": {"name": "noctis-admin", "key": "password"}
    }
    (worker_container,) = arc.build_worker_deployment(ctx, spec, IMAGES, [])["spec"]["template"][
        "spec"
    ]["containers"]
    assert "NOCTIS_ADMIN_PASSWORD" not in env_of(worker_container)
    assert "NOCTIS_ADMIN_PASSWORD" not in ctx.config  # a Secret, never the shared ConfigMap


def test_api_pods_believe_forwarded_addresses_only_from_the_named_proxies() -> None:
    default = arc.build_api_deployment(context(), ARCHIVE, IMAGES)
    (container,) = default["spec"]["template"]["spec"]["containers"]
    assert "NOCTIS_TRUSTED_PROXIES" not in env_of(container)  # nobody's X-Forwarded-For counts

    spec = ArchiveSpec.model_validate(
        {
            **ARCHIVE.model_dump(by_alias=True),
            "api": {"trustedProxies": ["10.244.0.0/16", "192.168.5.7", "fd00:10::/64"]},
        }
    )
    deployment = arc.build_api_deployment(context(), spec, IMAGES)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    value = env_of(container)["NOCTIS_TRUSTED_PROXIES"]
    assert value == "10.244.0.0/16,192.168.5.7/32,fd00:10::/64"
    assert Settings(trusted_proxies=value).trusted_proxies == value.split(
        ","
    )  # as the pod reads it
    # A new list rolls the API pods (the pod template changes with the config hash).
    old_hash = default["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH]
    assert deployment["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH] != old_hash


def test_the_pools_facilities_name_become_the_pods_pool_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the pods get for a Facility's other pool is what `Settings` reads as that pool;
    its credentials come only from its Secret."""
    second = StoragePoolSpec.model_validate(
        {
            "endpoint": "https://s3.other:9000",
            "bucket": "second-bucket",
            "region": "eu-west-1",
            "credentials": {"secretName": "second-s3"},
        }
    )
    ctx = arc.archive_context("noctis", "pacs", ARCHIVE, POOL, {"second": second, "images": POOL})
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in ctx.secret_env()}
    prefix = "NOCTIS_STORAGE_POOLS__second__"
    assert secrets[f"{prefix}ACCESS_KEY"] == {"name": "second-s3", "key": "accessKey"}
    assert secrets[f"{prefix}SECRET_KEY"] == {"name": "second-s3", "key": "secretKey"}
    assert not any("images" in name for name in secrets)  # the Archive's own: the default

    for name, value in ctx.config.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NOCTIS_DATABASE_URL", "postgresql+psycopg://db/noctis")
    monkeypatch.setenv(f"{prefix}ACCESS_KEY", "the-access-key")
    monkeypatch.setenv(f"{prefix}SECRET_KEY", "the-secret-key")
    settings = Settings()
    assert settings.storage_pool == "images"
    pool = settings.storage_pools["second"]
    assert (pool.endpoint, pool.bucket, pool.secure, pool.region) == (
        "s3.other:9000",
        "second-bucket",
        True,
        "eu-west-1",
    )
    assert pool.secret_key.get_secret_value() == "the-secret-key"
    assert "the-secret-key" not in repr(settings)
