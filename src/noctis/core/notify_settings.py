"""Who hears what: users' defaults by role and their preferences, and each facility's
receivers (webhooks, e-mail recipients) from its Facility resource or from REST.

A Facility resource (or `noctis facility apply -f`) that declares ``notifications`` wins:
its receivers are the facility's and REST may only read them. Without it, what an
administrator set through ``/api/facilities/{name}/notifications`` is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy.orm import Session

from noctis.core.index_secrets import Sealer, sealer
from noctis.core.notifications import NotificationKind
from noctis.core.roles import WORKLIST_ROLES, Role
from noctis.index.models import Facility, utcnow
from noctis.index.notify import FacilityNotificationSettings
from noctis.settings import Settings
from noctis.specs.notifications import NotificationsSpec

K = NotificationKind
# Who hears a kind unless they opted out (the defaults).
DEFAULT_ROLES: dict[NotificationKind, frozenset[Role]] = {
    K.STAT_ARRIVED: frozenset({Role.RADIOLOGIST, Role.FACILITY_ADMIN}),
    K.CRITICAL_RESULT: frozenset({Role.RADIOLOGIST, Role.FACILITY_ADMIN}),
    K.REPORT_FINAL: frozenset({Role.REFERRING_PHYSICIAN, Role.RADIOLOGIST}),
    K.REPORT_AMENDED: frozenset({Role.REFERRING_PHYSICIAN, Role.RADIOLOGIST}),
}
# Who may choose to hear a kind: those who may see the worklist hear of urgent studies; a
# referring physician only of the reports they may read.
ELIGIBLE_ROLES: dict[NotificationKind, frozenset[Role]] = {
    K.STAT_ARRIVED: WORKLIST_ROLES,
    K.CRITICAL_RESULT: WORKLIST_ROLES,
    K.REPORT_FINAL: WORKLIST_ROLES | {Role.REFERRING_PHYSICIAN},
    K.REPORT_AMENDED: WORKLIST_ROLES | {Role.REFERRING_PHYSICIAN},
}

Source = Literal["facility-resource", "rest", "none"]


def default_kinds(role: Role) -> list[str]:
    return [kind.value for kind in NotificationKind if role in DEFAULT_ROLES[kind]]


def eligible_kinds(role: Role) -> list[str]:
    return [kind.value for kind in NotificationKind if role in ELIGIBLE_ROLES[kind]]


def wanted_kinds(role: Role, chosen: list[str] | None) -> set[str]:
    """The kinds a user of ``role`` hears: their choice (None: the role's default), never a
    kind the role may not hear."""
    eligible = set(eligible_kinds(role))
    return eligible & set(default_kinds(role) if chosen is None else chosen)


@dataclass(frozen=True)
class Receivers:
    """A facility's webhooks and e-mail recipients, where they come from, and the webhooks'
    secrets by webhook name (a webhook without one is not called) as they are kept: from the
    environment for a Facility resource's, sealed in the index for REST-set ones."""

    spec: NotificationsSpec
    source: Source
    secrets: dict[str, str] = field(default_factory=dict, repr=False)

    def secret(self, webhook: str, settings: Settings) -> str:
        """The webhook's secret itself ("" if it has none); `IndexSecretsUnavailable` if a
        sealed one cannot be opened here."""
        kept = self.secrets.get(webhook, "")
        if self.source == "rest" and kept:
            return sealer(settings).open(kept)
        return kept


def declared_spec(facility: Facility) -> NotificationsSpec | None:
    """The ``notifications`` of the facility's resource, if it declares them."""
    declared = (facility.spec or {}).get("notifications")
    return None if declared is None else NotificationsSpec.model_validate(declared)


def facility_receivers(session: Session, facility: Facility, settings: Settings) -> Receivers:
    declared = declared_spec(facility)
    if declared is not None:
        from_env = _lower_keys(settings.webhook_secrets).get(facility.name.lower(), {})
        secrets = {
            webhook.name: from_env[webhook.name].get_secret_value()
            for webhook in declared.webhooks
            if webhook.name in from_env
        }
        return Receivers(declared, "facility-resource", secrets)
    row = session.get(FacilityNotificationSettings, facility.id)
    if row is None:
        return Receivers(NotificationsSpec(), "none")
    return Receivers(NotificationsSpec.model_validate(row.settings), "rest", dict(row.secrets))


def _lower_keys(table: dict[str, dict]) -> dict[str, dict]:  # type: ignore[type-arg]
    # Environment variable names may come back in either case.
    return {k.lower(): {n.lower(): v for n, v in inner.items()} for k, inner in table.items()}


def store_rest_receivers(
    session: Session,
    facility: Facility,
    spec: NotificationsSpec,
    secrets: dict[str, str],
    seal: Sealer,
) -> FacilityNotificationSettings:
    """Replace the facility's REST-set receivers. ``secrets``: webhook name -> secret, for
    new secrets, kept sealed (`IndexSecretsUnavailable` without a key); a webhook listed
    without one keeps the secret it had, sealed again with the first key."""
    row = session.get(FacilityNotificationSettings, facility.id)
    if row is None:
        row = FacilityNotificationSettings(facility_id=facility.id, settings={}, secrets={})
        session.add(row)
    kept = {
        w.name: row.secrets[w.name]
        for w in spec.webhooks
        if w.name in (row.secrets or {}) and w.name not in secrets  # a new one replaces it
    }
    if seal.fernet is not None:  # with the first key now (rotation), and sealed at last
        kept = {name: seal.reseal(v) for name, v in kept.items()}
    kept.update({name: seal.seal(secret) for name, secret in secrets.items()})
    missing = [w.name for w in spec.webhooks if w.name not in kept]
    if missing:
        raise ValueError(f"webhooks need a secret (the HMAC key): {', '.join(missing)}")
    row.settings = spec.model_dump(
        mode="json", by_alias=True, exclude={"webhooks": {"__all__": {"secret_ref"}}}
    )
    row.secrets = kept
    row.updated_at = utcnow()
    session.flush()
    return row
