"""The Route spec: one shape for the custom resource and for `noctis route apply -f`.

A Route forwards a facility's instances to registered AEs (entries of that facility's
registry with a host and port). It is a kind of its own rather than a list in the Facility:
routes change more often than facilities, and each has its own progress to report.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydicom.datadict import keyword_for_tag, tag_for_keyword

from noctis.specs.common import AETitle, KubeName
from noctis.specs.status import Condition

_TAG = re.compile(r"^\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?$")


class RouteTrigger(StrEnum):
    STABLE = "stable"  # the whole study, once it is stable (no new instance for a while)
    INSTANCE = "instance"  # each instance, soon after it is stored


def attribute_tag(name: str) -> int:
    """The tag an attribute is named by: a keyword (``StudyDescription``) or a tag
    (``0008103E``, ``0008,103E``, ``(0008,103E)``); ValueError otherwise."""
    found = _TAG.match(name.strip())
    if found:
        return int(found.group(1) + found.group(2), 16)
    tag = tag_for_keyword(name.strip())
    if tag is None:
        raise ValueError(f"not a DICOM keyword or tag: {name!r}")
    return int(tag)


def attribute_name(tag: int) -> str:
    """The keyword of a tag, or its hexadecimal form for a private or unknown one."""
    return keyword_for_tag(tag) or f"{tag:08X}"


def _check_attribute(name: str) -> str:
    attribute_tag(name)
    return name


AttributeName = Annotated[str, AfterValidator(_check_attribute)]
Pattern = Annotated[str, Field(max_length=1024)]


class RouteMatch(BaseModel):
    """Which instances the route forwards: every criterion given must hold (none: all)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    calling_ae_titles: list[Pattern] = Field(
        default_factory=list,
        alias="callingAETitles",
        description="the AE titles that sent the study (any of these DICOM wildcard patterns: "
        "* any run of characters, ? one character)",
    )
    modalities: list[Pattern] = Field(
        default_factory=list, description="the series' Modality (any of these patterns)"
    )
    attributes: dict[AttributeName, Pattern] = Field(
        default_factory=dict,
        description="DICOM attributes by keyword or tag (e.g. StudyDescription, 0008103E), "
        "each matching a pattern; alternatives separated by a backslash (CT\\MR)",
    )

    def attribute_patterns(self) -> dict[int, list[str]]:
        """Tag -> its patterns."""
        return {attribute_tag(name): value.split("\\") for name, value in self.attributes.items()}


class RouteRetry(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    attempts: int = Field(
        10, ge=1, le=1000, description="attempts before an instance is a dead letter"
    )
    initial_delay_seconds: float = Field(
        10.0, ge=0.01, le=86400, alias="initialDelaySeconds", description="delay after a failure"
    )
    max_delay_seconds: float = Field(
        600.0,
        ge=0.01,
        le=86400,
        alias="maxDelaySeconds",
        description="longest delay (the delay doubles after each failure up to this)",
    )

    @model_validator(mode="after")
    def _ordered(self) -> RouteRetry:
        if self.max_delay_seconds < self.initial_delay_seconds:
            raise ValueError("retry.maxDelaySeconds must not be below retry.initialDelaySeconds")
        return self


class RouteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    facility: KubeName = Field(description="the facility whose instances this route forwards")
    match: RouteMatch = Field(default_factory=RouteMatch)
    destinations: list[AETitle] = Field(
        min_length=1,
        description="AE titles of the facility's registry (with host and port) to send to",
    )
    trigger: RouteTrigger = Field(
        RouteTrigger.STABLE,
        description="stable: forward a study once it is stable; instance: each instance as "
        "it is stored",
    )
    retry: RouteRetry = Field(default_factory=RouteRetry)
    enabled: bool = True

    @model_validator(mode="after")
    def _unique_destinations(self) -> RouteSpec:
        duplicates = sorted({d for d in self.destinations if self.destinations.count(d) > 1})
        if duplicates:
            raise ValueError(f"destinations listed twice: {', '.join(duplicates)}")
        return self


class RouteDocument(BaseModel):
    """A Route as written in a YAML file or read from the cluster."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    api_version: str = Field("pacs.noctis.io/v1alpha1", alias="apiVersion")
    kind: str = "Route"
    metadata: dict[str, Any]
    spec: RouteSpec

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @model_validator(mode="after")
    def _check_kind(self) -> RouteDocument:
        if self.kind != "Route":
            raise ValueError(f"expected kind Route, got {self.kind}")
        name = self.metadata.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("metadata.name is required")
        return self


class DestinationStatus(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    destination: str
    pending: int = Field(0, description="waiting to be sent, or being sent")
    sent: int = 0
    failed: int = Field(0, description="failed, to be tried again after a delay")
    dead: int = Field(0, description="failed on every attempt: retry with `noctis route retry`")
    last_error: str = Field("", alias="lastError")


class RouteStatus(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    observed_generation: int = Field(0, alias="observedGeneration")
    conditions: list[Condition] = Field(default_factory=list)
    pending: int = 0
    sent: int = 0
    failed: int = 0
    dead: int = 0
    destinations: list[DestinationStatus] = Field(default_factory=list)
    progress_updated: str = Field(
        "", alias="progressUpdated", description="when the counts were read from the index"
    )
