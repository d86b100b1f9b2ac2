"""The StoragePool spec: an S3 bucket, its versioning, object lock and lifecycle."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from noctis.specs.kube import SecretName

BucketName = Annotated[
    str,
    StringConstraints(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"),
]

ENDPOINT_PATTERN = r"^https?://[A-Za-z0-9.\-\[\]:]+/?$"


class DeletionPolicy(StrEnum):
    RETAIN = "Retain"  # deleting the StoragePool never touches the bucket
    DELETE = "Delete"  # empty the bucket (all versions) and remove it, behind a finalizer


class RetentionMode(StrEnum):
    GOVERNANCE = "GOVERNANCE"
    COMPLIANCE = "COMPLIANCE"


class CredentialsRef(BaseModel):
    """A Secret in the StoragePool's namespace holding S3 access keys."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    secret_name: SecretName = Field(alias="secretName")
    access_key_key: str = Field("accessKey", alias="accessKeyKey", min_length=1)
    secret_key_key: str = Field("secretKey", alias="secretKeyKey", min_length=1)


class ObjectLockSpec(BaseModel):
    """S3 object lock: can only be turned on when the bucket is created."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.days) && has(self.years))",
                    "message": "give retention in days or in years, not both",
                },
            ]
        },
    )

    enabled: bool = False
    mode: RetentionMode = Field(RetentionMode.GOVERNANCE, description="default retention mode")
    days: int | None = Field(None, ge=1, le=36500, description="default retention in days")
    years: int | None = Field(None, ge=1, le=100, description="default retention in years")

    @model_validator(mode="after")
    def _one_period(self) -> ObjectLockSpec:
        if self.days is not None and self.years is not None:
            raise ValueError("give retention in days or in years, not both")
        return self

    @property
    def has_default_retention(self) -> bool:
        return self.enabled and (self.days is not None or self.years is not None)


class LifecycleRule(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.expirationDays) || has(self.noncurrentVersionExpirationDays)"
                    " || has(self.abortIncompleteMultipartUploadDays)",
                    "message": "a lifecycle rule needs at least one action",
                },
            ]
        },
    )

    id: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._-]+$")
    enabled: bool = True
    prefix: str = Field("", max_length=1024, description="objects this rule applies to")
    expiration_days: int | None = Field(None, ge=1, alias="expirationDays")
    noncurrent_version_expiration_days: int | None = Field(
        None, ge=1, alias="noncurrentVersionExpirationDays"
    )
    abort_incomplete_multipart_upload_days: int | None = Field(
        None, ge=1, alias="abortIncompleteMultipartUploadDays"
    )

    @model_validator(mode="after")
    def _has_action(self) -> LifecycleRule:
        if (
            self.expiration_days is None
            and self.noncurrent_version_expiration_days is None
            and self.abort_incomplete_multipart_upload_days is None
        ):
            raise ValueError(f"lifecycle rule {self.id!r} needs at least one action")
        return self


# Where the archive writes (noctis.core.ingest, noctis.dicom.metadata): originals under
# ``<facility>/`` -- objects the index references -- and what can be rebuilt under ``derived/``.
DERIVED_PREFIX = "derived/"
# A Facility is named by its custom resource: a DNS-1123 subdomain.
_FACILITY_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_FACILITY_NAME_START = re.compile(r"[a-z0-9][-a-z0-9.]*")


def may_hold_indexed_objects(prefix: str) -> bool:
    """Whether keys under ``prefix`` can be originals the index references: any prefix but
    ``derived/...`` and those no facility's name can start (``_scratch/``, ``Exports/``)."""
    if prefix.startswith(DERIVED_PREFIX):
        return False
    head, slash, _ = prefix.partition("/")
    if not slash:  # "" or the start of a facility's name
        return not prefix or _FACILITY_NAME_START.fullmatch(prefix) is not None
    return _FACILITY_NAME.fullmatch(head) is not None


def expires_indexed_objects(rule: LifecycleRule) -> bool:
    """Whether ``rule`` would expire current objects the index still references. Retention is
    enforced through the index (a periodic task deletes what the policy says, index rows and
    objects together); a bucket rule expiring originals would leave rows pointing at nothing.
    Expiring noncurrent versions and incomplete uploads, or anything under ``derived/``, is safe."""
    return (
        rule.enabled and rule.expiration_days is not None and may_hold_indexed_objects(rule.prefix)
    )


class StoragePoolQuota(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    max_bytes: int | None = Field(
        None, ge=0, alias="maxBytes", description="reported as QuotaExceeded when passed"
    )


class StoragePoolSpec(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.objectLock) || !has(self.objectLock.enabled)"
                    " || !self.objectLock.enabled || !has(self.versioning) || self.versioning",
                    "message": "object lock needs versioning",
                },
                {"rule": "self.bucket == oldSelf.bucket", "message": "bucket is immutable"},
            ]
        },
    )

    endpoint: str = Field(
        pattern=ENDPOINT_PATTERN,
        max_length=512,
        description="S3 endpoint URL, e.g. https://s3.example.org or http://minio.store:9000",
    )
    region: str | None = Field(None, max_length=64)
    bucket: BucketName
    credentials: CredentialsRef
    versioning: bool = Field(True, description="keep every version of every object")
    object_lock: ObjectLockSpec = Field(default_factory=ObjectLockSpec, alias="objectLock")
    lifecycle: list[LifecycleRule] = Field(default_factory=list, max_length=100)
    quota: StoragePoolQuota = Field(default_factory=StoragePoolQuota)
    deletion_policy: DeletionPolicy = Field(DeletionPolicy.RETAIN, alias="deletionPolicy")

    @model_validator(mode="after")
    def _consistent(self) -> StoragePoolSpec:
        if self.object_lock.enabled and not self.versioning:
            raise ValueError("object lock needs versioning")
        ids = [rule.id for rule in self.lifecycle]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"lifecycle rule ids listed twice: {', '.join(duplicates)}")
        return self

    @property
    def host(self) -> str:
        """``host[:port]`` as the minio client wants it."""
        return urlsplit(self.endpoint).netloc

    @property
    def secure(self) -> bool:
        return urlsplit(self.endpoint).scheme == "https"
