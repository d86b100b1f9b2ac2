"""A StoragePool lifecycle rule that would expire objects the index references is refused: a
condition and an Event say why, and the bucket's lifecycle is left as it was. Rules on old
versions, incomplete uploads or `derived/` are applied. On the test bed's API server with the
session's S3 server, under the chart's RBAC."""

from __future__ import annotations

import json

import pytest
from operator_support import Cluster
from test_operator_cluster import pool_example

from noctis.operator import buckets

pytestmark = [pytest.mark.kube, pytest.mark.s3]

SAFE_RULES = [
    {"id": "expire-old-versions", "noncurrentVersionExpirationDays": 90},
    {"id": "abort-uploads", "abortIncompleteMultipartUploadDays": 2},
]


def bucket_rules(cluster: Cluster, bucket: str) -> list[tuple[str, str, int | None]]:
    config = cluster.s3.client().get_bucket_lifecycle(bucket)
    return [(r["id"], r["prefix"], r["expirationDays"]) for r in buckets.lifecycle_summary(config)]


def test_a_rule_expiring_indexed_objects_is_refused_and_the_bucket_left_alone(
    cluster: Cluster,
) -> None:
    bucket = f"{cluster.namespace}-images"
    cluster.apply(pool_example(cluster, lifecycle=SAFE_RULES))
    cluster.wait_condition("storagepool", "images")
    before = bucket_rules(cluster, bucket)
    assert [rule_id for rule_id, _, _ in before] == ["abort-uploads", "expire-old-versions"]

    everything = {"id": "expire-after-a-year", "expirationDays": 365}
    patch = {"spec": {"lifecycle": [*SAFE_RULES, everything]}}
    cluster.kubectl("patch", "storagepool", "images", "--type", "merge", "-p", json.dumps(patch))
    refused = cluster.wait_condition("storagepool", "images", "False", reason="LifecycleRefused")
    assert "'expire-after-a-year' (prefix '')" in refused["message"]
    assert "index" in refused["message"] and "left unchanged" in refused["message"]
    assert cluster.events("images", reason="LifecycleRefused")
    assert bucket_rules(cluster, bucket) == before

    # The same expiry on derived data only is allowed, and applied.
    derived = {"id": "expire-derived", "prefix": "derived/", "expirationDays": 30}
    patch = {"spec": {"lifecycle": [*SAFE_RULES, derived]}}
    cluster.kubectl("patch", "storagepool", "images", "--type", "merge", "-p", json.dumps(patch))
    cluster.wait_condition("storagepool", "images", "True", reason="BucketReady")
    assert ("expire-derived", "derived/", 30) in bucket_rules(cluster, bucket)


def test_a_new_pool_with_such_a_rule_makes_no_bucket(cluster: Cluster) -> None:
    rule = {"id": "facility", "prefix": "st-mary/", "expirationDays": 10}
    cluster.apply(pool_example(cluster, "short", lifecycle=[rule]))
    cluster.wait_condition("storagepool", "short", "False", reason="LifecycleRefused")
    assert not cluster.s3.client().bucket_exists(f"{cluster.namespace}-short")
