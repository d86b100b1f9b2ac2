"""Make an S3 bucket match a StoragePool spec, measure it, and (Delete policy) remove it.

Through the ``minio`` client, which MinIO, SeaweedFS and AWS S3 all speak. A bucket is tagged
with the StoragePool that made or adopted it, so a second pool naming the same bucket is refused
and a deletion never empties a bucket another pool owns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import ENABLED, Filter, Tags
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from minio.lifecycleconfig import (
    AbortIncompleteMultipartUpload,
    Expiration,
    LifecycleConfig,
    NoncurrentVersionExpiration,
    Rule,
)
from minio.objectlockconfig import DAYS, YEARS, ObjectLockConfig
from minio.versioningconfig import SUSPENDED, VersioningConfig

from noctis.specs.storagepool import LifecycleRule, StoragePoolSpec

OWNER_TAG = "noctis.io/storagepool"
_DELETE_BATCH = 1000


class BucketError(Exception):
    """The bucket cannot be made to match the spec; ``reason`` is a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class BucketState:
    created: bool = False
    adopted: bool = False
    versioning: str = ""
    object_lock: bool = False
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Usage:
    bytes: int
    objects: int


def make_client(spec: StoragePoolSpec, access_key: str, secret_key: str) -> Minio:
    # Short timeouts and few retries: a handler thread must not hang on a dead endpoint.
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5, read=60),
        retries=urllib3.Retry(total=2, backoff_factor=0.5, status_forcelist=[500, 502, 503, 504]),
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )
    return Minio(
        spec.host,
        access_key=access_key,
        secret_key=secret_key,
        secure=spec.secure,
        region=spec.region,
        http_client=http,
    )


def bucket_owner(client: Minio, bucket: str) -> str | None:
    try:
        tags = client.get_bucket_tags(bucket)
    except S3Error as exc:
        if exc.code in ("NoSuchTagSet", "NoSuchTagSetError"):
            return None
        raise
    return None if tags is None else tags.get(OWNER_TAG)


def ensure_bucket(client: Minio, spec: StoragePoolSpec, owner: str) -> BucketState:
    """Create or adopt the bucket and set versioning, object lock and lifecycle as declared."""
    state = BucketState()
    bucket = spec.bucket
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket, location=spec.region, object_lock=spec.object_lock.enabled)
        state.created = True
        state.changes.append("created bucket")
    current_owner = None if state.created else bucket_owner(client, bucket)
    if current_owner is not None and current_owner != owner:
        raise BucketError(
            "BucketConflict", f"bucket {bucket} belongs to StoragePool {current_owner}"
        )
    if current_owner is None:
        tags = Tags.new_bucket_tags()
        tags[OWNER_TAG] = owner
        client.set_bucket_tags(bucket, tags)
        state.adopted = not state.created
    _ensure_versioning(client, spec, state)
    _ensure_object_lock(client, spec, state)
    _ensure_lifecycle(client, spec, state)
    return state


def _ensure_versioning(client: Minio, spec: StoragePoolSpec, state: BucketState) -> None:
    current = client.get_bucket_versioning(spec.bucket).status or "Off"
    if spec.versioning and current != ENABLED:
        client.set_bucket_versioning(spec.bucket, VersioningConfig(ENABLED))
        state.changes.append("enabled versioning")
        current = ENABLED
    elif not spec.versioning and current == ENABLED:
        if _lock_config(client, spec.bucket) is not None:
            state.notes.append("versioning stays on: the bucket has object lock")
        else:
            # S3 cannot turn versioning off again, only suspend it.
            client.set_bucket_versioning(spec.bucket, VersioningConfig(SUSPENDED))
            state.changes.append("suspended versioning")
            current = SUSPENDED
    state.versioning = current


def _lock_config(client: Minio, bucket: str) -> ObjectLockConfig | None:
    try:
        return client.get_object_lock_config(bucket)
    except S3Error as exc:
        if exc.code == "ObjectLockConfigurationNotFoundError":
            return None
        raise


def _ensure_object_lock(client: Minio, spec: StoragePoolSpec, state: BucketState) -> None:
    lock = spec.object_lock
    current = _lock_config(client, spec.bucket)
    state.object_lock = current is not None
    if not lock.enabled:
        if current is not None:
            state.notes.append("object lock cannot be turned off on an existing bucket")
        return
    if current is None:
        raise BucketError(
            "ObjectLockUnavailable",
            f"bucket {spec.bucket} was created without object lock, which S3 only enables when "
            "a bucket is created: use a new bucket, or set objectLock.enabled to false",
        )
    if lock.has_default_retention:
        duration, unit = (lock.days, DAYS) if lock.days is not None else (lock.years, YEARS)
        wanted = (lock.mode.value, duration, unit)
        if (current.mode, current.duration, current.duration_unit) != wanted:
            client.set_object_lock_config(spec.bucket, ObjectLockConfig(*wanted))
            state.changes.append(f"set default retention {lock.mode.value} {duration} {unit}")
    elif current.mode is not None:
        client.delete_object_lock_config(spec.bucket)
        state.changes.append("removed default retention")


def lifecycle_config(rules: list[LifecycleRule]) -> LifecycleConfig | None:
    """The S3 lifecycle configuration for the declared rules (None for none)."""
    if not rules:
        return None
    out = []
    for rule in rules:
        out.append(
            Rule(
                ENABLED if rule.enabled else "Disabled",
                rule_filter=Filter(prefix=rule.prefix),
                rule_id=rule.id,
                expiration=Expiration(days=rule.expiration_days) if rule.expiration_days else None,
                noncurrent_version_expiration=NoncurrentVersionExpiration(
                    noncurrent_days=rule.noncurrent_version_expiration_days
                )
                if rule.noncurrent_version_expiration_days
                else None,
                abort_incomplete_multipart_upload=AbortIncompleteMultipartUpload(
                    days_after_initiation=rule.abort_incomplete_multipart_upload_days
                )
                if rule.abort_incomplete_multipart_upload_days
                else None,
            )
        )
    return LifecycleConfig(out)


def lifecycle_summary(config: LifecycleConfig | None) -> list[dict[str, Any]]:
    """A comparable form of a lifecycle configuration."""
    if config is None:
        return []
    summary = []
    for rule in config.rules:
        summary.append(
            {
                "id": rule.rule_id,
                "status": rule.status,
                "prefix": (rule.rule_filter.prefix if rule.rule_filter else None) or "",
                "expirationDays": rule.expiration.days if rule.expiration else None,
                "noncurrentDays": rule.noncurrent_version_expiration.noncurrent_days
                if rule.noncurrent_version_expiration
                else None,
                "abortDays": rule.abort_incomplete_multipart_upload.days_after_initiation
                if rule.abort_incomplete_multipart_upload
                else None,
            }
        )
    return sorted(summary, key=lambda r: r["id"] or "")


def _ensure_lifecycle(client: Minio, spec: StoragePoolSpec, state: BucketState) -> None:
    wanted = lifecycle_config(spec.lifecycle)
    current = client.get_bucket_lifecycle(spec.bucket)
    if lifecycle_summary(current) == lifecycle_summary(wanted):
        return
    if wanted is None:
        client.delete_bucket_lifecycle(spec.bucket)
        state.changes.append("removed lifecycle rules")
    else:
        client.set_bucket_lifecycle(spec.bucket, wanted)
        state.changes.append(f"set {len(spec.lifecycle)} lifecycle rule(s)")


def measure(client: Minio, bucket: str) -> Usage:
    """Bytes of every stored version, and the number of current objects."""
    total = objects = 0
    for obj in client.list_objects(bucket, recursive=True, include_version=True):
        if obj.is_delete_marker:
            continue
        total += obj.size or 0
        if obj.version_id is None or str(obj.is_latest).lower() == "true":
            objects += 1
    return Usage(total, objects)


def empty_and_remove(client: Minio, bucket: str, owner: str) -> None:
    """Delete every version and delete marker, then the bucket (Delete policy only)."""
    if not client.bucket_exists(bucket):
        return
    current_owner = bucket_owner(client, bucket)
    if current_owner not in (None, owner):
        raise BucketError(
            "BucketConflict",
            f"bucket {bucket} belongs to StoragePool {current_owner}: not deleting it",
        )
    while True:
        batch = [
            DeleteObject(obj.object_name, obj.version_id)
            for _, obj in zip(
                range(_DELETE_BATCH),
                client.list_objects(bucket, recursive=True, include_version=True),
                strict=False,
            )
        ]
        if not batch:
            break
        errors = list(client.remove_objects(bucket, batch, bypass_governance_mode=True))
        if errors:
            raise BucketError(
                "RetentionActive",
                f"{len(errors)} object version(s) in bucket {bucket} cannot be deleted "
                f"({errors[0].code}: {errors[0].message}); object lock retention may still "
                "be running. Set deletionPolicy: Retain to release the StoragePool.",
            )
    client.remove_bucket(bucket)
