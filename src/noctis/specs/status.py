"""Status models of the custom resources: what the operator reports, and the CRD status schemas.

The operator writes these (never kopf handler return values); the CRD generator turns them into
the ``status`` schema of each CRD, so what is written and what is accepted cannot drift.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(BaseModel):
    """A Kubernetes API convention condition."""

    model_config = ConfigDict(populate_by_name=True)

    type: str = Field(description="e.g. Ready, Synced, Available")
    status: ConditionStatus
    reason: str = Field("", description="CamelCase machine-readable reason")
    message: str = ""
    last_transition_time: str = Field(
        "", alias="lastTransitionTime", description="when status last changed (RFC 3339)"
    )
    observed_generation: int = Field(
        0, alias="observedGeneration", description="the spec generation this condition is about"
    )


class _Status(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    observed_generation: int = Field(0, alias="observedGeneration")
    conditions: list[Condition] = Field(default_factory=list)


class StoragePoolStatus(_Status):
    endpoint: str = ""
    bucket: str = ""
    versioning: str = Field("", description="Enabled, Suspended or empty")
    object_lock: bool = Field(False, alias="objectLock")
    used_bytes: int = Field(0, alias="usedBytes", description="bytes of all stored object versions")
    objects: int = Field(0, description="current (latest, not deleted) objects")
    usage_updated: str = Field("", alias="usageUpdated", description="when usage was measured")


class FacilityConsistency(BaseModel):
    """What the consistency check found in the facility (noctis.core.consistency)."""

    model_config = ConfigDict(populate_by_name=True)

    missing_objects: int = Field(
        0, alias="missingObjects", description="indexed instances whose object is missing"
    )
    orphans_removed: int = Field(
        0, alias="orphansRemoved", description="objects without an index row, removed"
    )


class FacilityStatus(_Status):
    studies: int = 0
    bytes: int = 0
    used_bytes: int = Field(
        0, alias="usedBytes", description="bytes stored (the same as bytes; named as quotas are)"
    )
    application_entities: int = Field(0, alias="applicationEntities")
    task_queue: str = Field("", alias="taskQueue", description="the facility's task queue")
    last_association: str = Field("", alias="lastAssociation")
    usage_updated: str = Field("", alias="usageUpdated")
    consistency: FacilityConsistency = Field(default_factory=lambda: FacilityConsistency())


class WorkloadStatus(_Status):
    replicas: int = 0
    ready_replicas: int = Field(0, alias="readyReplicas")


class DicomNodeStatus(WorkloadStatus):
    endpoint: str = Field("", description="external address:port from the Service")
    service: str = Field("", description="the Service carrying DICOM traffic")


class ScalingStatus(BaseModel):
    """What the operator measured on one worker Deployment's queues and what it wants."""

    model_config = ConfigDict(populate_by_name=True)

    deployment: str = ""
    queued: int = Field(0, description="tasks waiting in the broker's queues (all priorities)")
    unacked: int = Field(0, description="tasks delivered to a worker and not yet acknowledged")
    wanted_replicas: int = Field(0, alias="wantedReplicas")
    replicas: int = Field(0, description="the Deployment's replicas as last set")
    last_busy: str = Field(
        "", alias="lastBusy", description="when the queues last wanted as many replicas as ran"
    )
    measured: str = Field("", description="when the queues were last read (RFC 3339)")
    message: str = ""


class ArchiveStatus(WorkloadStatus):
    api_endpoint: str = Field("", alias="apiEndpoint", description="in-cluster URL of the API")
    worker_ready_replicas: int = Field(0, alias="workerReadyReplicas")
    task_queues: list[str] = Field(default_factory=list, alias="taskQueues")
    # Workers at scale (issue 14, `scaling`)
    transfer_ready_replicas: int = Field(0, alias="transferReadyReplicas")
    destination_queues: list[str] = Field(default_factory=list, alias="destinationQueues")
    worker_scaling: ScalingStatus | None = Field(None, alias="workerScaling")
    transfer_scaling: ScalingStatus | None = Field(None, alias="transferScaling")
