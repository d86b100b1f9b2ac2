"""The operator's own settings (``NOCTIS_`` prefix), built in ``run()`` or kopf's startup."""

from __future__ import annotations

import random
from importlib.metadata import PackageNotFoundError, version

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def noctis_version() -> str:
    try:
        return version("noctis")
    except PackageNotFoundError:  # running from a source tree
        return "0.0.0"


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOCTIS_", extra="ignore")

    database_url: str | None = Field(
        None, description="the index database the Facility registry is synced into"
    )
    operator_namespaces: str = Field(
        "", description="comma-separated namespaces to watch (ignored when cluster-wide)"
    )
    operator_clusterwide: bool = False
    operator_standalone: bool = Field(False, description="no peering (a single replica)")
    operator_peering: str = Field("noctis", description="KopfPeering object replicas meet in")
    operator_priority: int | None = Field(
        None, description="peering priority; random by default so exactly one replica is active"
    )
    operator_liveness_host: str = "0.0.0.0"
    operator_liveness_port: int = 8080
    operator_image_registry: str = "ghcr.io/noctis-pacs"
    operator_image_tag: str = Field(default_factory=noctis_version)
    operator_image_pull_policy: str | None = None
    operator_usage_interval: float = Field(300.0, gt=0, description="StoragePool usage refresh, s")
    operator_facility_interval: float = Field(60.0, gt=0, description="Facility usage refresh, s")
    operator_route_interval: float = Field(
        30.0, gt=0, description="Route progress refresh (status counts from the index), s"
    )
    operator_retry_delay: float = Field(
        30.0, gt=0, description="seconds before a blocked reconcile is retried"
    )
    # Workers at scale (issue 14, `scaling`)
    operator_scale_interval: float = Field(
        15.0, gt=0, description="seconds between reads of an Archive's queue depths"
    )
    operator_metrics_host: str = "0.0.0.0"
    operator_metrics_port: int = Field(
        9090, ge=0, le=65535, description="Prometheus /metrics (queue depth); 0 turns it off"
    )

    def namespaces(self) -> list[str]:
        return [ns.strip() for ns in self.operator_namespaces.split(",") if ns.strip()]

    def priority(self) -> int:
        if self.operator_priority is not None:
            return self.operator_priority
        # kopf pauses every replica but the one with the highest priority (peering), so
        # distinct priorities give one active replica and a standby that takes over.
        return random.SystemRandom().randint(1, 2**31 - 1)

    def image(self, component: str) -> str:
        return f"{self.operator_image_registry}/noctis-{component}:{self.operator_image_tag}"

    @property
    def liveness_endpoint(self) -> str:
        return f"http://{self.operator_liveness_host}:{self.operator_liveness_port}/healthz"
