"""The Archive spec: the API and worker Deployments of one Noctis installation, and what they share.

An Archive names the index database, the task broker and the StoragePool; DicomNodes name their
Archive and take the same settings, so one place says where images and the index live.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from noctis.settings import DuplicatePolicy
from noctis.specs.common import CIDR, KubeName, Port
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


def destination_queue(ae_title: str) -> str:
    """The queue of the transfers to one destination AE (as ``noctis.core.queue`` names it)."""
    return f"noctis.destination.{ae_title.strip()}"


def _not_everyone(value: str) -> str:
    if ipaddress.ip_network(value).prefixlen == 0:
        raise ValueError(
            f"{value} would trust every address: any client could then choose its own "
            "address with X-Forwarded-For; name the proxies' networks"
        )
    return value


# An IPv6 CIDR is at most 49 characters (with a dotted IPv4 tail); the bound also keeps the
# cost of the CRD's CEL rule known to the API server.
ProxyNetwork = Annotated[CIDR, StringConstraints(max_length=49), AfterValidator(_not_everyone)]
MAX_TRUSTED_PROXIES = 32


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
    trusted_proxies: list[ProxyNetwork] = Field(
        default_factory=list,
        alias="trustedProxies",
        max_length=MAX_TRUSTED_PROXIES,
        description="networks (CIDRs) of the reverse proxies in front of the API, e.g. the "
        "ingress controller's pods: only their X-Forwarded-For and X-Forwarded-Proto are "
        "believed (NOCTIS_TRUSTED_PROXIES), so login rate limits and lockouts, and the audit "
        "trail, see each client's own address; empty: the peer is the client",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(n, !n.endsWith('/0'))",
                    "message": "a /0 network would trust every address: name the proxies' networks",
                }
            ]
        },
    )


class AutoscaleSpec(BaseModel):
    """Replicas from the depth of the Deployment's queues, set by the operator on a timer."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.minReplicas) || !has(self.maxReplicas)"
                    " || self.minReplicas <= self.maxReplicas",
                    "message": "minReplicas must not exceed maxReplicas",
                }
            ]
        },
    )

    min_replicas: int = Field(1, ge=0, le=100, alias="minReplicas")
    max_replicas: int = Field(10, ge=1, le=100, alias="maxReplicas")
    tasks_per_replica: int = Field(
        20,
        ge=1,
        le=100000,
        alias="tasksPerReplica",
        description="queued and unacknowledged tasks one replica is wanted for",
    )
    cool_down_seconds: int = Field(
        300,
        ge=0,
        le=86400,
        alias="coolDownSeconds",
        description="replicas go down only after the queues have wanted fewer for this long",
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscaleSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must not exceed maxReplicas")
        return self


# Every pipeline worker runs the periodic jobs (stable detection, sweeps, retention): at least
# one must run even when the queues are empty.
_PIPELINE_NEVER_IDLE = (
    "worker.autoscale.minReplicas must be at least 1: the periodic jobs run there"
)
_PIPELINE_NEVER_IDLE_RULE = (
    "!has(self.autoscale) || !has(self.autoscale.minReplicas) || self.autoscale.minReplicas >= 1"
)


class WorkerSpec(BaseModel):
    """The worker pods: series metadata bundles and the rest of the pipeline, on the default
    queue and every facility's task queue."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": _PIPELINE_NEVER_IDLE_RULE, "message": _PIPELINE_NEVER_IDLE}
            ]
        },
    )

    replicas: int = Field(1, ge=0, le=100, description="replicas when autoscale is not given")
    concurrency: int = Field(2, ge=1, le=64)
    autoscale: AutoscaleSpec | None = Field(
        None, description="scale on the depth of the default and facility queues"
    )

    @model_validator(mode="after")
    def _never_idle(self) -> WorkerSpec:
        if self.autoscale is not None and self.autoscale.min_replicas < 1:
            raise ValueError(_PIPELINE_NEVER_IDLE)
        return self

    health_port: Port = Field(8081, alias="healthPort", description="serves /healthz and /readyz")
    resources: Resources = Field(
        default_factory=lambda: default_resources(cpu="250m", memory="512Mi", memory_limit="2Gi")
    )
    image: Image | None = None


class TransfersSpec(BaseModel):
    """The transfer worker pods: sends to routing destinations, on each destination's queue,
    apart from the pipeline so a slow destination never delays a facility's derived work."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    replicas: int = Field(1, ge=0, le=100, description="replicas when autoscale is not given")
    concurrency: int = Field(4, ge=1, le=64, description="transfers one pod runs at once")
    autoscale: AutoscaleSpec | None = Field(
        None, description="scale on the depth of the destinations' queues"
    )
    health_port: Port = Field(8081, alias="healthPort", description="serves /healthz and /readyz")
    resources: Resources = Field(
        default_factory=lambda: default_resources(cpu="50m", memory="256Mi", memory_limit="1Gi")
    )
    image: Image | None = None


class ArchiveSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    storage_pool: KubeName = Field(alias="storagePool", description="StoragePool for the objects")
    database: SecretKeyRef = Field(description="Secret key holding the index database URL")
    broker: SecretKeyRef | None = Field(
        None, description="Secret key holding the task broker URL (Redis)"
    )
    index_secrets_key: SecretKeyRef | None = Field(
        None,
        alias="indexSecretsKey",
        description="Secret key holding the key (32 characters or more; comma-separated keys "
        "rotate it) that seals the secrets the index keeps: webhook secrets set through REST "
        "(NOCTIS_INDEX_SECRETS_KEY, in the API and worker pods); without it such secrets are "
        "refused",
    )
    api: ApiSpec = Field(default_factory=ApiSpec)
    worker: WorkerSpec = Field(default_factory=WorkerSpec)
    transfers: TransfersSpec = Field(default_factory=TransfersSpec)
    image_pull_policy: ImagePullPolicy | None = Field(None, alias="imagePullPolicy")
    duplicate_policy: DuplicatePolicy = Field(
        DuplicatePolicy.KEEP_FIRST,
        alias="duplicatePolicy",
        description=(
            "a SOP instance received again with another data set: keep-first (Success, the "
            "first kept, the copy audited), reject or replace"
        ),
    )
