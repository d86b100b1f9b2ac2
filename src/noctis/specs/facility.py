"""The Facility spec: one shape for the custom resource and for `noctis facility apply -f`."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from noctis.specs.common import CIDR, AETitle, CodeRef, KubeName, Port
from noctis.specs.notifications import NotificationsSpec


class DimseService(StrEnum):
    ECHO = "echo"
    STORE = "store"
    FIND = "find"
    MOVE = "move"
    GET = "get"
    COMMITMENT = "commitment"  # storage commitment (N-ACTION), issue 14
    WORKLIST = "worklist"  # Modality Worklist C-FIND, issue 15
    MPPS = "mpps"  # Modality Performed Procedure Step N-CREATE/N-SET, issue 15


ALL_SERVICES = [s.value for s in DimseService]


class ApplicationEntitySpec(BaseModel):
    """A modality or peer of the facility."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    ae_title: AETitle = Field(alias="aeTitle", description="the peer's AE title")
    host: str | None = Field(
        None,
        description="where C-MOVE sends to and storage commitment results go (host name or "
        "address)",
    )
    port: Port | None = Field(
        None, description="the peer's listening port, for C-MOVE and storage commitment results"
    )
    allowed_cidrs: list[CIDR] = Field(
        default_factory=list,
        alias="allowedCIDRs",
        description="source networks this AE may call from; empty means its host only, or any "
        "address when no host is given",
    )
    services: list[DimseService] = Field(
        default_factory=lambda: [DimseService(s) for s in ALL_SERVICES],
        description="DIMSE services this AE may use",
    )
    description: str = ""


class FacilityQuota(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    max_bytes: int | None = Field(None, ge=0, alias="maxBytes")
    max_studies: int | None = Field(None, ge=0, alias="maxStudies")


class RetentionSpec(BaseModel):
    """How long the facility keeps a study (issue 14, part `delete`): a periodic job deletes
    studies older than that through the deletion path, except those on legal hold."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    days: int = Field(ge=1, le=36500, description="days a study is kept")
    after: Literal["studyDate", "received"] = Field(
        "received",
        description="counted from the Study Date (a study without one: from its receipt) "
        "or from when the archive received the study's first instance",
    )


class FacilitySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    display_name: str = Field("", alias="displayName", max_length=255)
    application_entities: list[ApplicationEntitySpec] = Field(
        default_factory=list, alias="applicationEntities"
    )
    storage_pool: KubeName | None = Field(None, alias="storagePool")
    quota: FacilityQuota = Field(default_factory=FacilityQuota)
    identity_provider_groups: list[str] = Field(
        default_factory=list,
        alias="identityProviderGroups",
        description="identity-provider groups whose members may see this facility's studies",
    )
    # Retention (issue 14, part `delete`): none by default, studies are kept until deleted.
    retention: RetentionSpec | None = Field(
        None, description="delete studies older than this (never those on legal hold)"
    )
    stable_after_seconds: float | None = Field(
        None,
        ge=0.05,  # minimum, not gt: the API server refuses a numeric exclusiveMinimum
        alias="stableAfterSeconds",
        description="a study with no new instance for this long becomes stable (derivatives, "
        "routing); unset: the archive's NOCTIS_STABLE_AFTER_SECONDS",
    )
    # Notifications (issue 15, part `notify`): webhooks and e-mail recipients of the facility.
    # Declared here, it wins over what REST set (/api/facilities/{name}/notifications).
    notifications: NotificationsSpec | None = Field(
        None,
        description="webhooks (signed with the secret of secretRef) and e-mail recipients "
        "told of STAT studies, final and amended reports and critical results; unset: "
        "those set through the REST API",
    )

    @model_validator(mode="after")
    def _webhook_secrets_by_reference(self) -> FacilitySpec:
        if self.notifications is not None:
            bare = [w.name for w in self.notifications.webhooks if w.secret_ref is None]
            if bare:
                raise ValueError(f"webhooks need a secretRef (the HMAC secret): {', '.join(bare)}")
        return self

    # Results of automated analysis (issue 15, part `results`: noctis.core.results).
    critical_finding_codes: list[CodeRef] = Field(
        default_factory=list,
        alias="criticalFindingCodes",
        max_length=500,
        description="coded findings (SCHEME:VALUE, e.g. SCT:274100004) that make an arriving "
        "SR or SEG a critical result: the study becomes STAT and a notification is raised",
    )

    @model_validator(mode="after")
    def _unique_ae_titles(self) -> FacilitySpec:
        titles = [ae.ae_title for ae in self.application_entities]
        duplicates = sorted({t for t in titles if titles.count(t) > 1})
        if duplicates:
            raise ValueError(f"AE titles listed twice: {', '.join(duplicates)}")
        return self


class FacilityDocument(BaseModel):
    """A Facility as written in a YAML file or read from the cluster (apiVersion/kind/metadata)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    api_version: str = Field("pacs.noctis.io/v1alpha1", alias="apiVersion")
    kind: str = "Facility"
    metadata: dict[str, Any]
    spec: FacilitySpec

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @model_validator(mode="after")
    def _check_kind(self) -> FacilityDocument:
        if self.kind != "Facility":
            raise ValueError(f"expected kind Facility, got {self.kind}")
        name = self.metadata.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("metadata.name is required")
        return self
