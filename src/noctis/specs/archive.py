"""The Archive spec: the API and worker Deployments of one Noctis installation, and what they share.

An Archive names the index database, the task broker and the StoragePool; DicomNodes name their
Archive and take the same settings, so one place says where images and the index live.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from noctis.settings import DuplicatePolicy
from noctis.specs.common import KubeName, Port
from noctis.specs.kube import (
    Image,
    ImagePullPolicy,
    Resources,
    SecretKeyRef,
    ServiceType,
    default_resources,
)

DEFAULT_QUEUE = "noctis"


def facility_queue(facility: str) -> str:
    """The task queue of one facility: its derivatives and routing never wait behind another's."""
    return f"noctis.facility.{facility}"


class ApiServiceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: ServiceType = ServiceType.CLUSTER_IP
    port: Port = 80
    node_port: int | None = Field(None, ge=30000, le=32767, alias="nodePort")
    annotations: dict[str, str] = Field(default_factory=dict)


class ApiSpec(BaseModel):
    """The API pods: DICOMweb, REST, login and the viewer."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    replicas: int = Field(2, ge=0, le=100)
    port: Port = Field(8080, description="container port (NOCTIS_API_PORT)")
    service: ApiServiceSpec = Field(default_factory=ApiServiceSpec)
    secret_key: SecretKeyRef | None = Field(
        None, alias="secretKey", description="Secret holding the session signing key"
    )
    admin_password: SecretKeyRef | None = Field(
        None,
        alias="adminPassword",
        description="Secret holding the password of the first administrator `admin`, created "
        "when the index has no user yet (NOCTIS_ADMIN_PASSWORD); without it, create users "
        "with `noctis user add`",
    )
    resources: Resources = Field(
        default_factory=lambda: default_resources(cpu="250m", memory="256Mi", memory_limit="1Gi")
    )
    image: Image | None = None


class WorkerSpec(BaseModel):
    """The worker pods: thumbnails, metadata caches, routing, retention."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    replicas: int = Field(1, ge=0, le=100)
    concurrency: int = Field(2, ge=1, le=64)
    health_port: Port = Field(8081, alias="healthPort", description="serves /healthz and /readyz")
    resources: Resources = Field(
        default_factory=lambda: default_resources(cpu="250m", memory="512Mi", memory_limit="2Gi")
    )
    image: Image | None = None


class ArchiveSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    storage_pool: KubeName = Field(alias="storagePool", description="StoragePool for the objects")
    database: SecretKeyRef = Field(description="Secret key holding the index database URL")
    broker: SecretKeyRef | None = Field(
        None, description="Secret key holding the task broker URL (Redis)"
    )
    api: ApiSpec = Field(default_factory=ApiSpec)
    worker: WorkerSpec = Field(default_factory=WorkerSpec)
    image_pull_policy: ImagePullPolicy | None = Field(None, alias="imagePullPolicy")
    duplicate_policy: DuplicatePolicy = Field(
        DuplicatePolicy.KEEP_FIRST,
        alias="duplicatePolicy",
        description=(
            "a SOP instance received again with another data set: keep-first (Success, the "
            "first kept, the copy audited), reject or replace"
        ),
    )
