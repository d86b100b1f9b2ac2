"""Bucket reconciliation against a real S3 server (SeaweedFS)."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from minio import Minio
from operator_support import remove_buckets

from noctis.operator import buckets
from noctis.specs.storagepool import StoragePoolSpec
from support.s3 import SeaweedFS


def pool(bucket: str, endpoint: str, **change: Any) -> StoragePoolSpec:
    return StoragePoolSpec.model_validate(
        {
            "endpoint": f"http://{endpoint}",
            "bucket": bucket,
            "credentials": {"secretName": "unused"},
            **change,
        }
    )


@pytest.fixture
def client(s3_server: SeaweedFS) -> Minio:
    s3_server.up()
    return s3_server.client()


@pytest.fixture
def bucket(s3_server: SeaweedFS) -> Iterator[str]:
    name = f"op-{secrets.token_hex(6)}"
    yield name
    remove_buckets(s3_server, name)


def put(client: Minio, bucket: str, key: str, data: bytes) -> None:
    client.put_object(bucket, key, io.BytesIO(data), len(data))


def test_creates_bucket_with_versioning_lock_and_lifecycle(
    s3_server: SeaweedFS, client: Minio, bucket: str
) -> None:
    spec = pool(
        bucket,
        s3_server.endpoint,
        objectLock={"enabled": True, "mode": "GOVERNANCE", "days": 3},
        lifecycle=[
            {"id": "tmp", "prefix": "tmp/", "expirationDays": 7},
            {"id": "old", "noncurrentVersionExpirationDays": 30},
        ],
    )
    state = buckets.ensure_bucket(client, spec, "pacs/images")
    assert state.created and state.versioning == "Enabled" and state.object_lock
    assert client.get_bucket_versioning(bucket).status == "Enabled"
    lock = client.get_object_lock_config(bucket)
    assert (lock.mode, lock.duration, lock.duration_unit) == ("GOVERNANCE", 3, "Days")
    rules = buckets.lifecycle_summary(client.get_bucket_lifecycle(bucket))
    assert [(r["id"], r["prefix"], r["expirationDays"], r["noncurrentDays"]) for r in rules] == [
        ("old", "", None, 30),
        ("tmp", "tmp/", 7, None),
    ]
    assert client.get_bucket_tags(bucket)[buckets.OWNER_TAG] == "pacs/images"

    again = buckets.ensure_bucket(client, spec, "pacs/images")
    assert again.changes == []  # idempotent

    changed = pool(bucket, s3_server.endpoint, objectLock={"enabled": True, "days": 5})
    assert "set default retention GOVERNANCE 5 Days" in (
        buckets.ensure_bucket(client, changed, "pacs/images").changes
    )
    assert buckets.lifecycle_summary(client.get_bucket_lifecycle(bucket)) == []


def test_refuses_a_bucket_of_another_pool(s3_server: SeaweedFS, client: Minio, bucket: str) -> None:
    buckets.ensure_bucket(client, pool(bucket, s3_server.endpoint), "pacs/images")
    with pytest.raises(buckets.BucketError) as caught:
        buckets.ensure_bucket(client, pool(bucket, s3_server.endpoint), "other/images")
    assert caught.value.reason == "BucketConflict"
    with pytest.raises(buckets.BucketError):
        buckets.empty_and_remove(client, bucket, "other/images")
    assert client.bucket_exists(bucket)


def test_adopts_an_untagged_bucket_but_cannot_add_object_lock(
    s3_server: SeaweedFS, client: Minio, bucket: str
) -> None:
    client.make_bucket(bucket)
    state = buckets.ensure_bucket(client, pool(bucket, s3_server.endpoint), "pacs/images")
    assert state.adopted and state.versioning == "Enabled"
    locked = pool(bucket, s3_server.endpoint, objectLock={"enabled": True})
    with pytest.raises(buckets.BucketError) as caught:
        buckets.ensure_bucket(client, locked, "pacs/images")
    assert caught.value.reason == "ObjectLockUnavailable"


def test_measures_every_version_and_counts_current_objects(
    s3_server: SeaweedFS, client: Minio, bucket: str
) -> None:
    buckets.ensure_bucket(client, pool(bucket, s3_server.endpoint), "pacs/images")
    put(client, bucket, "a.dcm", b"x" * 100)
    put(client, bucket, "a.dcm", b"x" * 50)  # a second version of a.dcm
    put(client, bucket, "b.dcm", b"y" * 10)
    client.remove_object(bucket, "b.dcm")  # a delete marker; the version stays
    assert buckets.measure(client, bucket) == buckets.Usage(bytes=160, objects=1)


def test_empty_and_remove_deletes_all_versions(
    s3_server: SeaweedFS, client: Minio, bucket: str
) -> None:
    spec = pool(bucket, s3_server.endpoint, objectLock={"enabled": True, "days": 1})
    buckets.ensure_bucket(client, spec, "pacs/images")
    put(client, bucket, "study/1.dcm", b"1" * 10)
    put(client, bucket, "study/1.dcm", b"2" * 10)
    client.remove_object(bucket, "study/1.dcm")
    buckets.empty_and_remove(client, bucket, "pacs/images")  # GOVERNANCE is bypassed
    assert not client.bucket_exists(bucket)
    buckets.empty_and_remove(client, bucket, "pacs/images")  # already gone: no error


def test_compliance_retention_blocks_deletion(
    s3_server: SeaweedFS, client: Minio, bucket: str
) -> None:
    spec = pool(
        bucket, s3_server.endpoint, objectLock={"enabled": True, "mode": "COMPLIANCE", "days": 1}
    )
    buckets.ensure_bucket(client, spec, "pacs/images")
    put(client, bucket, "study/1.dcm", b"1" * 10)
    with pytest.raises(buckets.BucketError) as caught:
        buckets.empty_and_remove(client, bucket, "pacs/images")
    assert caught.value.reason == "RetentionActive"
    assert "deletionPolicy: Retain" in caught.value.message
    assert client.bucket_exists(bucket)
