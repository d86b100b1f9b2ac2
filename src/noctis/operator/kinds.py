"""The resources the operator reads and writes: its own kinds and their children."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from noctis.specs.archive import ArchiveSpec
from noctis.specs.dicomnode import DicomNodeSpec
from noctis.specs.facility import FacilitySpec
from noctis.specs.route import RouteSpec, RouteStatus
from noctis.specs.status import ArchiveStatus, DicomNodeStatus, FacilityStatus, StoragePoolStatus
from noctis.specs.storagepool import StoragePoolSpec

GROUP = "pacs.noctis.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FIELD_MANAGER = "noctis-operator"
MANAGED_BY = "noctis-operator"


@dataclass(frozen=True)
class Resource:
    """A REST resource: where it lives in the API."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, sub: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


STORAGEPOOLS = Resource(GROUP, VERSION, "storagepools", "StoragePool")
FACILITIES = Resource(GROUP, VERSION, "facilities", "Facility")
DICOMNODES = Resource(GROUP, VERSION, "dicomnodes", "DicomNode")
ARCHIVES = Resource(GROUP, VERSION, "archives", "Archive")
ROUTES = Resource(GROUP, VERSION, "routes", "Route")

CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
SECRETS = Resource("", "v1", "secrets", "Secret")
SERVICES = Resource("", "v1", "services", "Service")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
HPAS = Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
PDBS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")

CHILD_RESOURCES = {r.kind: r for r in (CONFIGMAPS, SERVICES, DEPLOYMENTS, HPAS, PDBS)}
OWN_RESOURCES = {r.kind: r for r in (STORAGEPOOLS, FACILITIES, DICOMNODES, ARCHIVES, ROUTES)}


def resource_of(obj: dict[str, Any]) -> Resource:
    kind = obj["kind"]
    found = CHILD_RESOURCES.get(kind) or OWN_RESOURCES.get(kind)
    if found is None:
        raise KeyError(f"no resource for kind {kind}")
    return found


@dataclass(frozen=True)
class CrdKind:
    resource: Resource
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    short_names: tuple[str, ...]
    printer_columns: list[dict[str, Any]] = field(default_factory=list)
    # Children are named "<name>-<suffix>"; a DNS label allows 63 characters.
    max_name_length: int | None = None


def _column(name: str, path: str, kind: str = "string", priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "type": kind, "jsonPath": path}
    if priority:
        column["priority"] = priority
    return column


CRD_KINDS = [
    CrdKind(
        STORAGEPOOLS,
        StoragePoolSpec,
        StoragePoolStatus,
        ("sp", "pool"),
        [
            _column("Bucket", ".spec.bucket"),
            _column("Endpoint", ".spec.endpoint"),
            _column("Used", ".status.usedBytes", "integer"),
            _column("Objects", ".status.objects", "integer"),
            _column("Deletion", ".spec.deletionPolicy", priority=1),
        ],
    ),
    CrdKind(
        FACILITIES,
        FacilitySpec,
        FacilityStatus,
        ("fac",),
        [
            _column("Synced", '.status.conditions[?(@.type=="Synced")].status'),
            _column("AEs", ".status.applicationEntities", "integer"),
            _column("Studies", ".status.studies", "integer"),
            _column("Bytes", ".status.bytes", "integer"),
            _column("Display", ".spec.displayName", priority=1),
        ],
        max_name_length=63,
    ),
    CrdKind(
        DICOMNODES,
        DicomNodeSpec,
        DicomNodeStatus,
        ("dn", "dicom"),
        [
            _column("AE", ".spec.aeTitle"),
            _column("Endpoint", ".status.endpoint"),
            _column("Replicas", ".status.readyReplicas", "integer"),
            _column("Service", ".status.service", priority=1),
        ],
        max_name_length=59,  # "<name>-scp"
    ),
    CrdKind(
        ARCHIVES,
        ArchiveSpec,
        ArchiveStatus,
        ("arc",),
        [
            _column("API", ".status.apiEndpoint"),
            _column("Replicas", ".status.readyReplicas", "integer"),
            _column("Workers", ".status.workerReadyReplicas", "integer"),
        ],
        max_name_length=52,  # "<name>-worker", "<name>-config"; Service "<name>-api"
    ),
    CrdKind(
        ROUTES,
        RouteSpec,
        RouteStatus,
        ("rt",),
        [
            _column("Facility", ".spec.facility"),
            _column("Trigger", ".spec.trigger"),
            _column("Ready", '.status.conditions[?(@.type=="Ready")].status'),
            _column("Pending", ".status.pending", "integer"),
            _column("Sent", ".status.sent", "integer"),
            _column("Dead", ".status.dead", "integer"),
            _column("Destinations", ".spec.destinations", priority=1),
        ],
        max_name_length=253,
    ),
]
