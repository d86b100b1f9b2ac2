"""Kubernetes-shaped field types shared by the operator's spec models."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# A DNS subdomain (RFC 1123), the name rule for Secrets and ConfigMaps.
SecretName = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    ),
]

# A resource quantity ("500m", "1Gi", 2); the CRD marks it x-kubernetes-int-or-string.
_QUANTITY = r"^[+]?[0-9.]+([eE][-+]?[0-9]+|[a-zA-Z]{0,2})$"
Quantity = Annotated[
    int | Annotated[str, StringConstraints(pattern=_QUANTITY)],
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]

Image = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^\S+$")]


class SecretKeyRef(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: SecretName
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")


class ImagePullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class ServiceType(StrEnum):
    LOAD_BALANCER = "LoadBalancer"
    NODE_PORT = "NodePort"
    CLUSTER_IP = "ClusterIP"


class Resources(BaseModel):
    """Container resources, as in a pod spec."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)

    def as_dict(self) -> dict[str, dict[str, str | int]]:
        out: dict[str, dict[str, str | int]] = {}
        if self.requests:
            out["requests"] = dict(self.requests)
        if self.limits:
            out["limits"] = dict(self.limits)
        return out


def default_resources(cpu: str, memory: str, memory_limit: str) -> Resources:
    return Resources(requests={"cpu": cpu, "memory": memory}, limits={"memory": memory_limit})
