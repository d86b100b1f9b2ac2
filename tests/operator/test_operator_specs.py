"""The spec models: what a CR (or a local YAML file) may say, and the error a user sees."""

from __future__ import annotations

import pytest

from noctis.operator.errors import SpecInvalid, parse_spec
from noctis.specs.archive import ArchiveSpec, facility_queue
from noctis.specs.dicomnode import DicomNodeSpec
from noctis.specs.storagepool import DeletionPolicy, StoragePoolSpec, expires_indexed_objects

POOL = {
    "endpoint": "https://s3.example.org",
    "bucket": "noctis-images",
    "credentials": {"secretName": "noctis-s3"},
}


def test_dicomnode_defaults() -> None:
    spec = parse_spec(DicomNodeSpec, {"aeTitle": "NOCTIS"})
    assert spec.archive == "noctis"
    assert spec.port == 11112
    assert spec.service_port == 11112
    assert spec.service.type == "LoadBalancer"
    assert spec.service.external_traffic_policy == "Local"
    assert (spec.min_replicas, spec.max_replicas) == (1, 3)
    assert spec.resources.requests["cpu"] == "250m"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"aeTitle": "A" * 17}, "spec.aeTitle"),
        ({"aeTitle": ""}, "spec.aeTitle"),
        ({"aeTitle": "BACK\\SLASH"}, "spec.aeTitle"),
        ({"aeTitle": " LEADING"}, "spec.aeTitle"),
        ({"aeTitle": "TRAILING "}, "spec.aeTitle"),
        ({"aeTitle": "OK", "port": 0}, "spec.port"),
        ({"aeTitle": "OK", "port": 65536}, "spec.port"),
        ({"aeTitle": "OK", "minReplicas": 4, "maxReplicas": 2}, "maxReplicas must be at least"),
        ({"aeTitle": "OK", "service": {"loadBalancerSourceRanges": ["10.0.0.0/33"]}}, "CIDR"),
        ({"aeTitle": "OK", "service": {"type": "ClusterIP", "nodePort": 30104}}, "nodePort"),
        ({"aeTitle": "OK", "service": {"type": "Ingress"}}, "spec.service.type"),
        (
            {"aeTitle": "OK", "service": {"externalTrafficPolicy": "local"}},
            "spec.service.externalTrafficPolicy: Input should be 'Local' or 'Cluster'",
        ),
        ({"aeTitle": "OK", "colour": "blue"}, "spec.colour"),
    ],
)
def test_dicomnode_invalid(spec: dict[str, object], message: str) -> None:
    with pytest.raises(SpecInvalid) as caught:
        parse_spec(DicomNodeSpec, spec)
    assert message in str(caught.value)


def test_storagepool_defaults_and_endpoint() -> None:
    spec = parse_spec(StoragePoolSpec, POOL)
    assert spec.deletion_policy == DeletionPolicy.RETAIN
    assert spec.versioning is True
    assert (spec.host, spec.secure) == ("s3.example.org", True)
    plain = parse_spec(StoragePoolSpec, {**POOL, "endpoint": "http://minio.store:9000"})
    assert (plain.host, plain.secure) == ("minio.store:9000", False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bucket": "Upper_Case"}, "spec.bucket"),
        ({"endpoint": "s3.example.org"}, "spec.endpoint"),
        ({"versioning": False, "objectLock": {"enabled": True}}, "object lock needs versioning"),
        ({"objectLock": {"enabled": True, "days": 1, "years": 1}}, "not both"),
        ({"objectLock": {"enabled": True, "mode": "FOREVER"}}, "spec.objectLock.mode"),
        ({"lifecycle": [{"id": "nothing"}]}, "at least one action"),
        (
            {"lifecycle": [{"id": "a", "expirationDays": 1}, {"id": "a", "expirationDays": 2}]},
            "listed twice",
        ),
        ({"deletionPolicy": "Purge"}, "spec.deletionPolicy"),
    ],
)
def test_storagepool_invalid(change: dict[str, object], message: str) -> None:
    with pytest.raises(SpecInvalid) as caught:
        parse_spec(StoragePoolSpec, {**POOL, **change})
    assert message in str(caught.value)


def test_archive_spec_and_queues() -> None:
    spec = parse_spec(
        ArchiveSpec, {"storagePool": "images", "database": {"name": "db", "key": "url"}}
    )
    assert spec.api.replicas == 2
    assert spec.broker is None
    assert facility_queue("st-mary") == "noctis.facility.st-mary"
    with pytest.raises(SpecInvalid, match=r"spec\.database"):
        parse_spec(ArchiveSpec, {"storagePool": "images"})


@pytest.mark.parametrize(
    ("proxies", "message"),
    [
        (["*"], "spec.api.trustedProxies.0: Value error, not a CIDR: '*'"),
        (["10.0.0.0/33"], "not a CIDR"),
        (["0.0.0.0/0"], "would trust every address"),
        (["::/0"], "would trust every address"),
        ([f"10.0.{i}.0/24" for i in range(33)], "at most 32 items"),
    ],
)
def test_archive_trusted_proxies_are_networks_not_everyone(
    proxies: list[str], message: str
) -> None:
    spec = {"storagePool": "images", "database": {"name": "db", "key": "url"}}
    with pytest.raises(SpecInvalid) as caught:
        parse_spec(ArchiveSpec, {**spec, "api": {"trustedProxies": proxies}})
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("rule", "expires"),
    [
        ({"expirationDays": 30}, True),  # everything: originals too
        ({"prefix": "st-mary/", "expirationDays": 30}, True),  # a facility's originals
        ({"prefix": "tmp/", "expirationDays": 7}, True),  # "tmp" could be a facility
        ({"prefix": "st", "expirationDays": 30}, True),  # the start of facility names
        ({"prefix": "derived/", "expirationDays": 30}, False),  # rebuilt on demand
        ({"prefix": "derived/st-mary/", "expirationDays": 30}, False),
        ({"prefix": "_scratch/", "expirationDays": 1}, False),  # no facility is named so
        ({"prefix": "Exports/", "expirationDays": 1}, False),
        ({"noncurrentVersionExpirationDays": 90}, False),
        ({"abortIncompleteMultipartUploadDays": 2}, False),
        ({"enabled": False, "expirationDays": 30}, False),
    ],
)
def test_lifecycle_rules_that_expire_indexed_objects(
    rule: dict[str, object], expires: bool
) -> None:
    spec = parse_spec(StoragePoolSpec, {**POOL, "lifecycle": [{"id": "r", **rule}]})
    assert expires_indexed_objects(spec.lifecycle[0]) is expires


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"worker": {"autoscale": {"minReplicas": 5, "maxReplicas": 2}}}, "must not exceed"),
        ({"worker": {"autoscale": {"minReplicas": 0}}}, "periodic jobs run there"),
        ({"transfers": {"autoscale": {"tasksPerReplica": 0}}}, "tasksPerReplica"),
    ],
)
def test_archive_autoscale_bounds(change: dict[str, object], message: str) -> None:
    base = {"storagePool": "images", "database": {"name": "db", "key": "url"}}
    with pytest.raises(SpecInvalid) as caught:
        parse_spec(ArchiveSpec, {**base, **change})
    assert message in str(caught.value)
    idle = parse_spec(ArchiveSpec, {**base, "transfers": {"autoscale": {"minReplicas": 0}}})
    assert idle.transfers.autoscale is not None and idle.transfers.autoscale.min_replicas == 0
