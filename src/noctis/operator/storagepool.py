"""StoragePool: a bucket with versioning, object lock and lifecycle as declared, and its usage."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from minio import Minio
from minio.error import MinioException
from urllib3.exceptions import HTTPError

from noctis.operator import buckets
from noctis.operator.conditions import QUOTA_EXCEEDED, READY, Cond, now
from noctis.operator.context import Operator
from noctis.operator.errors import Blocked, SpecInvalid, parse_spec
from noctis.operator.kinds import SECRETS, STORAGEPOOLS
from noctis.specs.storagepool import DERIVED_PREFIX, StoragePoolSpec, expires_indexed_objects


class LifecycleRefused(SpecInvalid):
    """A lifecycle rule would expire objects the index references: nothing is changed on the
    bucket until the spec is fixed (Ready=False, a Warning Event)."""

    reason = "LifecycleRefused"


def check_lifecycle(spec: StoragePoolSpec) -> None:
    refused = [rule for rule in spec.lifecycle if expires_indexed_objects(rule)]
    if not refused:
        return
    described = ", ".join(f"{rule.id!r} (prefix {rule.prefix!r})" for rule in refused)
    raise LifecycleRefused(
        f"lifecycle rule(s) {described} would expire current objects that the index still "
        "references; retention is enforced through the index (Facility retention), not by "
        "bucket rules. Expire only noncurrent versions or incomplete uploads, or objects under "
        f"{DERIVED_PREFIX!r} or a prefix no facility is named by (e.g. '_scratch/'). "
        f"Bucket {spec.bucket} left unchanged."
    )


def owner_key(body: dict[str, Any]) -> str:
    """How the bucket's owner tag names this pool (not the uid: a re-created pool re-adopts)."""
    return f"{body['metadata']['namespace']}/{body['metadata']['name']}"


def client_for(op: Operator, namespace: str, spec: StoragePoolSpec) -> Minio:
    ref = spec.credentials
    secret = op.kube.get(SECRETS, namespace, ref.secret_name)
    if secret is None:
        raise Blocked("SecretNotFound", f"Secret {ref.secret_name} not found in {namespace}")
    data = secret.get("data") or {}
    keys = {}
    for key in (ref.access_key_key, ref.secret_key_key):
        if key not in data:
            raise Blocked("SecretKeyMissing", f"Secret {ref.secret_name} has no key {key!r}")
        try:
            keys[key] = base64.b64decode(data[key]).decode().strip()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise Blocked(
                "SecretKeyMissing", f"Secret {ref.secret_name} key {key!r}: {exc}"
            ) from exc
    return buckets.make_client(spec, keys[ref.access_key_key], keys[ref.secret_key_key])


def reconcile(op: Operator, body: dict[str, Any], *, measure: bool) -> None:
    meta = body["metadata"]
    namespace = meta["namespace"]
    spec = parse_spec(StoragePoolSpec, body.get("spec"))
    check_lifecycle(spec)
    client = client_for(op, namespace, spec)
    try:
        state = buckets.ensure_bucket(client, spec, owner_key(body))
        usage = buckets.measure(client, spec.bucket) if measure else None
    except buckets.BucketError as exc:
        raise Blocked(exc.reason, exc.message) from exc
    except (MinioException, HTTPError, OSError) as exc:
        raise Blocked("S3Unavailable", f"S3 endpoint {spec.endpoint}: {exc}") from exc

    if state.changes:
        changes = "; ".join(state.changes)
        op.events(body, "Normal", "BucketConfigured", f"bucket {spec.bucket}: {changes}")
    fields: dict[str, Any] = {
        "endpoint": spec.endpoint,
        "bucket": spec.bucket,
        "versioning": state.versioning,
        "objectLock": state.object_lock,
    }
    message = f"bucket {spec.bucket} on {spec.endpoint}: versioning {state.versioning}"
    if state.object_lock:
        message += ", object lock on"
    if spec.lifecycle:
        message += f", {len(spec.lifecycle)} lifecycle rule(s)"
    if state.notes:
        message += " (" + "; ".join(state.notes) + ")"
    conditions = [Cond(READY, True, "BucketReady", message)]
    if usage is not None:
        fields.update({"usedBytes": usage.bytes, "objects": usage.objects, "usageUpdated": now()})
        conditions.append(_quota_condition(op, body, spec, usage.bytes))
    op.write_status(STORAGEPOOLS, body, fields, conditions)


def _quota_condition(op: Operator, body: dict[str, Any], spec: StoragePoolSpec, used: int) -> Cond:
    limit = spec.quota.max_bytes
    if limit is None:
        return Cond(QUOTA_EXCEEDED, False, "NoQuota", "no quota declared")
    if used > limit:
        message = f"{used} bytes stored, quota {limit}"
        op.events(body, "Warning", "QuotaExceeded", message)
        return Cond(QUOTA_EXCEEDED, True, "OverQuota", message)
    return Cond(QUOTA_EXCEEDED, False, "WithinQuota", f"{used} of {limit} bytes used")


def delete(op: Operator, body: dict[str, Any]) -> None:
    """deletionPolicy Delete: empty the bucket (every version) and remove it."""
    spec = parse_spec(StoragePoolSpec, body.get("spec"))
    client = client_for(op, body["metadata"]["namespace"], spec)
    try:
        buckets.empty_and_remove(client, spec.bucket, owner_key(body))
    except buckets.BucketError as exc:
        raise Blocked(exc.reason, exc.message) from exc
    except (MinioException, HTTPError, OSError) as exc:
        raise Blocked("S3Unavailable", f"S3 endpoint {spec.endpoint}: {exc}") from exc
    op.events(body, "Normal", "BucketDeleted", f"bucket {spec.bucket} emptied and removed")
