"""A facility's notification receivers: webhooks and e-mail recipients, and whether the
patient's name and ID may leave the archive in what they receive.

One shape for the Facility resource's ``notifications`` and for the REST settings of
``noctis serve`` (``/api/facilities/{name}/notifications``). In a Facility resource a
webhook's secret is only a reference to a Secret (``secretRef``); through REST it is given
once (``secret``) and kept in the index, never answered back.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from noctis.specs.kube import SecretKeyRef

# The kinds of `noctis.core.notifications.NotificationKind` (specs import nothing of core).
KINDS = ("stat-arrived", "report-final", "report-amended", "critical-result")
Kind = Annotated[str, Field(json_schema_extra={"enum": list(KINDS)})]

# A webhook's name: it names its secret's environment variable too (lowercase, like a label).
WebhookName = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]
EmailAddress = Annotated[
    str, StringConstraints(min_length=3, max_length=254, pattern=r"^[^@\s<>,;]+@[^@\s<>,;]+$")
]


def _check_kinds(kinds: list[str]) -> list[str]:
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown notification kinds {unknown} (known: {', '.join(KINDS)})")
    return kinds


class WebhookSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: WebhookName
    url: AnyHttpUrl = Field(description="where the JSON payload is POSTed (http or https)")
    kinds: list[Kind] = Field(
        default_factory=lambda: list(KINDS), description="the kinds sent (default: every kind)"
    )
    secret_ref: SecretKeyRef | None = Field(
        None,
        alias="secretRef",
        description="the Secret key holding the HMAC secret the payload is signed with "
        "(required in a Facility resource)",
    )

    @model_validator(mode="after")
    def _known_kinds(self) -> WebhookSpec:
        _check_kinds(self.kinds)
        return self


class EmailRecipientSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    address: EmailAddress
    kinds: list[Kind] = Field(default_factory=lambda: list(KINDS))

    @model_validator(mode="after")
    def _known_kinds(self) -> EmailRecipientSpec:
        _check_kinds(self.kinds)
        return self


class NotificationsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    webhooks: list[WebhookSpec] = Field(default_factory=list)
    email_recipients: list[EmailRecipientSpec] = Field(
        default_factory=list, alias="emailRecipients"
    )
    include_patient_identity: bool = Field(
        False,
        alias="includePatientIdentity",
        description="send the patient's name and ID (and the event's title) in webhook "
        "payloads and e-mails; off: only the kind, facility, study UID and time leave",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> NotificationsSpec:
        names = [w.name for w in self.webhooks]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"webhook names listed twice: {', '.join(twice)}")
        return self
