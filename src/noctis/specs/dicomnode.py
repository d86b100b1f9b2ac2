"""The DicomNode spec: a listening DICOM SCP behind a Service, scaled by an HPA."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from noctis.specs.common import CIDR, AETitle, KubeName, Port
from noctis.specs.kube import (
    Image,
    ImagePullPolicy,
    Resources,
    SecretName,
    ServiceType,
    default_resources,
)

DEFAULT_ARCHIVE = "noctis"


class ExternalTrafficPolicy(StrEnum):
    # Local keeps the caller's source address, which the facility registry's CIDR checks need.
    LOCAL = "Local"
    CLUSTER = "Cluster"


class DicomServiceSpec(BaseModel):
    """How callers reach the SCP."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.nodePort) || !has(self.type) || self.type != 'ClusterIP'",
                    "message": "nodePort needs type NodePort or LoadBalancer",
                },
                {
                    "rule": "!has(self.loadBalancerSourceRanges)"
                    " || size(self.loadBalancerSourceRanges) == 0"
                    " || !has(self.type) || self.type == 'LoadBalancer'",
                    "message": "loadBalancerSourceRanges needs type LoadBalancer",
                },
            ]
        },
    )

    type: ServiceType = ServiceType.LOAD_BALANCER
    port: Port | None = Field(None, description="the Service port; defaults to the SCP port")
    node_port: int | None = Field(None, ge=30000, le=32767, alias="nodePort")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="passed to the Service (cloud load-balancer settings)"
    )
    load_balancer_source_ranges: list[CIDR] = Field(
        default_factory=list,
        alias="loadBalancerSourceRanges",
    )
    load_balancer_class: str | None = Field(None, alias="loadBalancerClass", max_length=253)
    external_traffic_policy: ExternalTrafficPolicy = Field(
        ExternalTrafficPolicy.LOCAL,
        alias="externalTrafficPolicy",
        description="Local (the default) keeps each caller's own address, which the "
        "facilities' allowed CIDRs and the per-address connection cap need; Cluster hides it "
        "behind a node's address (the per-address cap is then turned off)",
    )

    @property
    def hides_client_addresses(self) -> bool:
        """Callers from outside reach the pods from a node's address (source NAT)."""
        return (
            self.type != ServiceType.CLUSTER_IP
            and self.external_traffic_policy == ExternalTrafficPolicy.CLUSTER
        )

    @model_validator(mode="after")
    def _consistent(self) -> DicomServiceSpec:
        if self.node_port is not None and self.type == ServiceType.CLUSTER_IP:
            raise ValueError("nodePort needs type NodePort or LoadBalancer")
        if self.load_balancer_source_ranges and self.type != ServiceType.LOAD_BALANCER:
            raise ValueError("loadBalancerSourceRanges needs type LoadBalancer")
        return self


class TLSSpec(BaseModel):
    """DICOM TLS (PS3.15): a kubernetes.io/tls Secret, optionally with ca.crt for client certs."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    secret_name: SecretName = Field(alias="secretName")
    require_client_certificate: bool = Field(False, alias="requireClientCertificate")


class DicomNodeSpec(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.maxReplicas) || !has(self.minReplicas)"
                    " || self.maxReplicas >= self.minReplicas",
                    "message": "maxReplicas must be at least minReplicas",
                },
            ]
        },
    )

    archive: KubeName = Field(
        DEFAULT_ARCHIVE, description="the Archive (same namespace) whose index and storage it uses"
    )
    ae_title: AETitle = Field(alias="aeTitle", description="the SCP's own AE title")
    port: Port = Field(11112, description="DICOM port the SCP listens on")
    service: DicomServiceSpec = Field(default_factory=DicomServiceSpec)
    min_replicas: int = Field(1, ge=1, le=100, alias="minReplicas")
    max_replicas: int = Field(3, ge=1, le=100, alias="maxReplicas")
    target_cpu_utilization: int = Field(
        70, ge=1, le=100, alias="targetCPUUtilization", description="HPA target, percent"
    )
    max_associations: int = Field(32, ge=1, le=1000, alias="maxAssociations")
    facilities: list[KubeName] = Field(
        default_factory=list,
        description="facilities whose AEs may call this node; empty means every enabled facility",
    )
    tls: TLSSpec | None = None
    resources: Resources = Field(
        default_factory=lambda: default_resources(cpu="250m", memory="256Mi", memory_limit="1Gi")
    )
    drain_seconds: int = Field(
        300,
        ge=10,
        le=7200,
        alias="drainSeconds",
        description="how long a stopping pod may take to finish open associations "
        "(terminationGracePeriodSeconds)",
    )
    image: Image | None = Field(None, description="overrides the operator's default SCP image")
    image_pull_policy: ImagePullPolicy | None = Field(None, alias="imagePullPolicy")
    pod_annotations: dict[str, str] = Field(default_factory=dict, alias="podAnnotations")
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")

    @model_validator(mode="after")
    def _replicas(self) -> DicomNodeSpec:
        if self.max_replicas < self.min_replicas:
            raise ValueError("maxReplicas must be at least minReplicas")
        return self

    @property
    def service_port(self) -> int:
        return self.service.port or self.port
