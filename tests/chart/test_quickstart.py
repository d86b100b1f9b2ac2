"""The chart's quickstart: backing services in the cluster and a ready-made archive on them."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from helm_chart import CHART, helm, render_chart

from noctis.specs.archive import ArchiveSpec
from noctis.specs.dicomnode import DicomNodeSpec
from noctis.specs.facility import FacilitySpec
from noctis.specs.storagepool import StoragePoolSpec

QUICKSTART = {"quickstart": {"enabled": True}}
TEMPLATES = [
    f"templates/quickstart/quickstart-{name}.yaml"
    for name in ("secrets", "postgresql", "redis", "s3", "resources")
]
DEPLOYMENT = "templates/operator/operator-deployment.yaml"
MIGRATIONS = "templates/migrations/migrations-job.yaml"


def by_kind(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def quickstart(**values: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return by_kind(render_chart({"quickstart": {"enabled": True, **values}}))


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_quickstart_is_off_by_default() -> None:
    assert render_chart(show_only=TEMPLATES) == []
    (job,) = render_chart(show_only=[MIGRATIONS])
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"


def test_quickstart_renders_backing_services_and_the_four_resources() -> None:
    docs = render_chart(QUICKSTART, show_only=TEMPLATES)
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [
        ("Archive", "noctis"),
        ("Deployment", "noctis-redis"),
        ("DicomNode", "noctis"),
        ("Facility", "quickstart"),
        ("Secret", "noctis-admin"),
        ("Secret", "noctis-index-secrets"),
        ("Secret", "noctis-postgresql"),
        ("Secret", "noctis-redis"),
        ("Secret", "noctis-s3"),
        ("Secret", "noctis-session"),
        ("Service", "noctis-postgresql"),
        ("Service", "noctis-redis"),
        ("Service", "noctis-s3"),
        ("StatefulSet", "noctis-postgresql"),
        ("StatefulSet", "noctis-s3"),
        ("StoragePool", "noctis"),
    ]
    for doc in docs:
        assert doc["metadata"]["namespace"] == "pacs"
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == "noctis"


def test_the_resources_are_valid_specs_wired_to_the_services() -> None:
    objs = quickstart()
    pool = StoragePoolSpec.model_validate(objs[("StoragePool", "noctis")]["spec"])
    assert pool.endpoint == "http://noctis-s3.pacs.svc:8333"
    assert pool.credentials.secret_name == "noctis-s3"
    assert pool.deletion_policy.value == "Retain"
    archive = ArchiveSpec.model_validate(objs[("Archive", "noctis")]["spec"])
    assert archive.storage_pool == "noctis"
    assert (archive.database.name, archive.database.key) == ("noctis-postgresql", "url")
    assert archive.broker is not None and archive.broker.name == "noctis-redis"
    assert archive.api.admin_password is not None
    assert (archive.api.admin_password.name, archive.api.admin_password.key) == (
        "noctis-admin",
        "password",
    )
    assert archive.api.secret_key is not None and archive.api.secret_key.name == "noctis-session"
    sealing = archive.index_secrets_key
    assert sealing is not None and (sealing.name, sealing.key) == ("noctis-index-secrets", "key")
    node = DicomNodeSpec.model_validate(objs[("DicomNode", "noctis")]["spec"])
    assert (node.ae_title, node.port, node.archive) == ("NOCTIS", 11112, "noctis")
    assert node.service.type.value == "LoadBalancer"
    assert node.facilities == ["quickstart"]


def test_the_facility_takes_any_ae_from_the_allowed_networks_only() -> None:
    objs = quickstart()
    facility = FacilitySpec.model_validate(objs[("Facility", "quickstart")]["spec"])
    (anyone,) = facility.application_entities
    assert anyone.ae_title == "*"
    assert anyone.allowed_cidrs == ["127.0.0.0/8"]  # the safe default: this machine only
    destination = {"aeTitle": "STORESCP", "host": "10.88.0.1", "port": 11113}
    objs = quickstart(allowedCIDRs=["10.88.0.1/32"], extraApplicationEntities=[destination])
    facility = FacilitySpec.model_validate(objs[("Facility", "quickstart")]["spec"])
    assert [ae.ae_title for ae in facility.application_entities] == ["*", "STORESCP"]
    assert facility.application_entities[0].allowed_cidrs == ["10.88.0.1/32"]
    assert facility.application_entities[1].port == 11113


def test_credentials_are_generated_once_in_secrets_and_urls_agree() -> None:
    objs = quickstart()
    pg = objs[("Secret", "noctis-postgresql")]["stringData"]
    assert len(pg["password"]) == 32
    url = urlsplit(pg["url"])
    assert url.scheme == "postgresql+psycopg"
    assert (url.username, url.password) == ("noctis", pg["password"])
    assert (url.hostname, url.port, url.path) == ("noctis-postgresql.pacs.svc", 5432, "/noctis")
    redis = objs[("Secret", "noctis-redis")]["stringData"]
    assert redis["url"] == f"redis://:{redis['password']}@noctis-redis.pacs.svc:6379/0"
    s3 = objs[("Secret", "noctis-s3")]["stringData"]
    assert len(s3["accessKey"]) == 20 and len(s3["secretKey"]) == 40
    assert len(objs[("Secret", "noctis-admin")]["stringData"]["password"]) == 24
    assert len(objs[("Secret", "noctis-session")]["stringData"]["key"]) == 64
    sealing_key = objs[("Secret", "noctis-index-secrets")]["stringData"]["key"]
    assert len(sealing_key) == 64  # NOCTIS_INDEX_SECRETS_KEY needs 32 characters or more
    # A second render generates other values: nothing is a constant of the chart.
    again = quickstart()
    assert again[("Secret", "noctis-postgresql")]["stringData"]["password"] != pg["password"]


def test_given_credentials_are_used_and_escaped_in_urls() -> None:
    objs = quickstart(
        adminPassword="chosen admin",
        postgresql={"password": "p@ss/word"},
        redis={"password": "r:pw"},
        s3={"accessKey": "AK", "secretKey": "SK"},
    )
    assert objs[("Secret", "noctis-admin")]["stringData"]["password"] == "chosen admin"
    pg = objs[("Secret", "noctis-postgresql")]["stringData"]
    assert pg["password"] == "p@ss/word"
    assert urlsplit(pg["url"]).hostname == "noctis-postgresql.pacs.svc"
    assert "p%40ss%2Fword@" in pg["url"]
    assert objs[("Secret", "noctis-redis")]["stringData"]["url"].startswith("redis://:r%3Apw@")
    assert objs[("Secret", "noctis-s3")]["stringData"] == {"accessKey": "AK", "secretKey": "SK"}


def test_operator_migrates_in_an_init_container_once_the_database_answers() -> None:
    assert render_chart(QUICKSTART, show_only=[MIGRATIONS]) == []
    (deployment,) = render_chart(QUICKSTART, show_only=[DEPLOYMENT])
    pod = deployment["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"] == ["noctis", "migrate", "--wait", "600"]
    assert init["image"] == pod["containers"][0]["image"]
    database = {"secretKeyRef": {"name": "noctis-postgresql", "key": "url"}}
    assert env_of(init)["NOCTIS_DATABASE_URL"] == database
    assert env_of(pod["containers"][0])["NOCTIS_DATABASE_URL"] == database
    assert init["securityContext"]["runAsNonRoot"] is True
    (plain,) = render_chart(show_only=[DEPLOYMENT])
    assert "initContainers" not in plain["spec"]["template"]["spec"]


def test_backing_services_run_non_root_from_the_images_given() -> None:
    values = {
        "imagePullPolicy": "Never",
        "postgresql": {"image": "localhost/noctis-testbed-postgres:abc"},
        "redis": {"image": "localhost/noctis-testbed-redis:abc"},
        "s3": {"image": "localhost/noctis-testbed-seaweedfs:abc"},
    }
    objs = quickstart(**values)
    expected = {
        ("StatefulSet", "noctis-postgresql"): ("localhost/noctis-testbed-postgres:abc", 999),
        ("Deployment", "noctis-redis"): ("localhost/noctis-testbed-redis:abc", 999),
        ("StatefulSet", "noctis-s3"): ("localhost/noctis-testbed-seaweedfs:abc", 10002),
    }
    for key, (image, uid) in expected.items():
        pod = objs[key]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid
        assert pod["automountServiceAccountToken"] is False
        (container,) = pod["containers"]
        assert (container["image"], container["imagePullPolicy"]) == (image, "Never")
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["readinessProbe"]
    # Secrets reach the processes through the environment, never in the spec itself.
    redis = objs[("Deployment", "noctis-redis")]["spec"]["template"]["spec"]["containers"][0]
    assert "$(REDIS_PASSWORD)" in redis["args"]
    s3 = objs[("StatefulSet", "noctis-s3")]["spec"]["template"]["spec"]["containers"][0]
    assert env_of(s3)["AWS_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "noctis-s3", "key": "secretKey"}
    }


def test_defaults_are_the_upstream_images() -> None:
    objs = quickstart()
    images = {
        key[1]: objs[key]["spec"]["template"]["spec"]["containers"][0]["image"]
        for key in objs
        if key[0] in ("StatefulSet", "Deployment") and key[1] != "noctis-operator"
    }
    assert images == {
        "noctis-postgresql": "docker.io/library/postgres:15-bookworm",
        "noctis-redis": "docker.io/library/redis:7.0-bookworm",
        "noctis-s3": "docker.io/chrislusf/seaweedfs:4.48",
    }


def data_volume(objs: dict[tuple[str, str], dict[str, Any]], name: str) -> dict[str, Any] | None:
    volumes = objs[("StatefulSet", name)]["spec"]["template"]["spec"]["volumes"]
    return next((v for v in volumes if v["name"] == "data"), None)


def test_storage_choices() -> None:
    objs = quickstart()
    assert data_volume(objs, "noctis-postgresql") == {"name": "data", "emptyDir": {}}
    objs = quickstart(storage={"type": "hostPath", "hostPath": "/var/lib/noctis-quickstart/"})
    assert data_volume(objs, "noctis-postgresql") == {
        "name": "data",
        "hostPath": {"path": "/var/lib/noctis-quickstart/postgresql", "type": "DirectoryOrCreate"},
    }
    assert data_volume(objs, "noctis-s3")["hostPath"]["path"] == "/var/lib/noctis-quickstart/s3"
    objs = quickstart(storage={"type": "persistentVolumeClaim", "storageClass": "fast"})
    assert data_volume(objs, "noctis-s3") is None
    (claim,) = objs[("StatefulSet", "noctis-s3")]["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("quickstart.storage.type=hostPath", "quickstart.storage.hostPath is needed"),
        ("quickstart.storage.type=nfs", "/quickstart/storage/type"),
        ("quickstart.allowedCIDRs=null", "allowedCIDRs"),
        ("quickstart.s3.deletionPolicy=Wipe", "deletionPolicy"),
        ("quickstart.dicomNode.aeTitle=BACK\\\\SLASH", "aeTitle"),
    ],
)
def test_bad_quickstart_values_fail_clearly(setting: str, message: str) -> None:
    result = helm(
        "template", "noctis", str(CHART), "--set", "quickstart.enabled=true", "--set", setting,
        check=False,
    )  # fmt: skip
    assert result.returncode != 0, setting
    assert message in result.stderr
