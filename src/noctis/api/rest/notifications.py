"""Notifications over REST.

- ``/api/notifications``: the caller's in-app list (newest first, unread count), marked read
  one by one or all at once; only notifications of facilities the caller may see.
- ``/api/me/notifications``: the caller's preferences (kinds, channels, e-mail address).
- ``/api/facilities/{name}/notifications``: a facility's webhooks and e-mail recipients,
  for administrators and the facility's administrators (a facility the caller may not see
  is 404); read-only when the Facility resource declares them (it wins: 409 on PUT).
- ``/api/notifications/deliveries``: webhook calls and e-mails with their state, attempts
  and last error; dead ones retried.

Every change is audited in its own transaction.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from noctis.api.audit import actor_type
from noctis.api.rest.deps import SessionDep
from noctis.api.security import Principal, PrincipalDep, client_address
from noctis.core import notify_delivery, notify_inbox
from noctis.core.audit import AuditEvent, AuditOutcome, add_to_session
from noctis.core.index_secrets import IndexSecretsUnavailable, sealer
from noctis.core.notify_destinations import networks, refuse_named_blocked
from noctis.core.notify_settings import declared_spec, facility_receivers, store_rest_receivers
from noctis.core.roles import USER_ADMIN_ROLES
from noctis.index.models import Facility
from noctis.index.notify import DeliveryState
from noctis.specs.notifications import EmailRecipientSpec, NotificationsSpec, WebhookSpec

router = APIRouter(tags=["notifications"])

NOTIFICATION_AUDIT_ACTION = "notification"


def _audit(
    session: SessionDep,
    request: Request,
    principal: Principal,
    change: str,
    facility_id: int | None = None,
    **detail: Any,
) -> None:
    add_to_session(
        session,
        AuditEvent(
            action=NOTIFICATION_AUDIT_ACTION,
            outcome=AuditOutcome.SUCCESS,
            actor=principal.subject,
            actor_type=actor_type(principal),
            client=client_address(request),
            facility_id=facility_id,
            detail={"change": change, **detail},
        ),
    )


def _me(session: SessionDep, principal: Principal) -> int:
    user_id = notify_inbox.user_id_of(session, principal.subject)
    if user_id is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no account for this principal")
    return user_id


@router.get("/notifications")
def my_notifications(
    principal: PrincipalDep,
    session: SessionDep,
    unread: Annotated[bool, Query(description="only the unread ones")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    items, unread_count = notify_inbox.inbox(
        session,
        _me(session, principal),
        principal.facility_ids,
        unread_only=unread,
        limit=limit,
        offset=offset,
    )
    return {"unread": unread_count, "notifications": items}


@router.post("/notifications/read-all")
def read_all(principal: PrincipalDep, session: SessionDep, request: Request) -> dict[str, int]:
    marked = notify_inbox.mark_all_read(session, _me(session, principal), principal.facility_ids)
    if marked:
        _audit(session, request, principal, "read-all", marked=marked)
    return {"marked": marked}


@router.post("/notifications/{notification_id}/read")
def read_one(
    notification_id: int, principal: PrincipalDep, session: SessionDep, request: Request
) -> dict[str, Any]:
    if not notify_inbox.mark_read(
        session, _me(session, principal), principal.facility_ids, notification_id
    ):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such notification")
    _audit(session, request, principal, "read", notification=notification_id)
    return {"id": notification_id, "read": True}


class PreferencesBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    kinds: list[str] | None = Field(None, description="kinds to receive; null: the role's")
    channels: list[str] = Field(default_factory=lambda: [notify_inbox.IN_APP])
    email_address: str = Field("", alias="emailAddress", max_length=254)


@router.get("/me/notifications")
def my_preferences(principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    prefs = notify_inbox.preferences(session, _me(session, principal))
    return notify_inbox.describe(principal.role, prefs)


@router.put("/me/notifications")
def set_my_preferences(
    body: PreferencesBody, principal: PrincipalDep, session: SessionDep, request: Request
) -> dict[str, Any]:
    user_id = _me(session, principal)
    prefs = notify_inbox.Preferences(body.kinds, list(body.channels), body.email_address)
    try:
        notify_inbox.set_preferences(session, user_id, principal.role, prefs)
    except notify_inbox.PreferenceError as refused:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(refused)) from None
    _audit(
        session,
        request,
        principal,
        "preferences",
        kinds=body.kinds,
        channels=body.channels,
    )
    return notify_inbox.describe(principal.role, notify_inbox.preferences(session, user_id))


def _managed_facility(session: SessionDep, principal: Principal, name: str) -> Facility:
    facility = session.scalar(select(Facility).where(Facility.name == name))
    if facility is None or not principal.can_read(facility.id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no facility {name!r}")
    if principal.role not in USER_ADMIN_ROLES:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail="administrators and facility administrators only"
        )
    return facility


def _describe_receivers(session: SessionDep, facility: Facility, request: Request) -> Any:
    receivers = facility_receivers(session, facility, request.app.state.runtime.settings)
    spec = receivers.spec.model_dump(mode="json", by_alias=True)
    for webhook in spec["webhooks"]:
        if receivers.source == "rest":
            webhook["secretSet"] = webhook["name"] in receivers.secrets
        # A resource's secrets are the workers' (from their Secrets), not this process's.
        if webhook.get("secretRef") is None:
            webhook.pop("secretRef", None)
    return {"facility": facility.name, "source": receivers.source, **spec}


@router.get("/facilities/{name}/notifications")
def facility_notifications(
    name: str, principal: PrincipalDep, session: SessionDep, request: Request
) -> dict[str, Any]:
    """The facility's receivers and where they come from: ``facility-resource`` (its
    Facility resource declares them; it wins), ``rest`` (set here) or ``none``."""
    return _describe_receivers(session, _managed_facility(session, principal, name), request)


class RestWebhook(WebhookSpec):
    secret: str | None = Field(
        None,
        min_length=16,
        max_length=512,
        description="the HMAC secret (at least 16 characters); omitted: keep the current one",
    )


class FacilityNotificationsBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    webhooks: list[RestWebhook] = Field(default_factory=list)
    email_recipients: list[EmailRecipientSpec] = Field(
        default_factory=list, alias="emailRecipients"
    )
    include_patient_identity: bool = Field(False, alias="includePatientIdentity")


@router.put("/facilities/{name}/notifications")
def set_facility_notifications(
    name: str,
    body: FacilityNotificationsBody,
    principal: PrincipalDep,
    session: SessionDep,
    request: Request,
) -> dict[str, Any]:
    facility = _managed_facility(session, principal, name)
    if declared_spec(facility) is not None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"facility {name}'s notifications are declared by its Facility resource "
            "(spec.notifications), which wins: change them there",
        )
    try:
        spec = NotificationsSpec.model_validate(
            body.model_dump(by_alias=True, exclude={"webhooks": {"__all__": {"secret"}}})
        )
        settings = request.app.state.runtime.settings
        blocked = networks(settings.webhook_blocked_networks)
        for webhook in spec.webhooks:
            refuse_named_blocked(str(webhook.url), blocked)
        secrets = {w.name: w.secret for w in body.webhooks if w.secret}
        store_rest_receivers(session, facility, spec, secrets, sealer(settings))
    except ValueError as refused:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(refused)) from None
    except IndexSecretsUnavailable as unavailable:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(unavailable)) from None
    _audit(
        session,
        request,
        principal,
        "facility-receivers",
        facility_id=facility.id,
        webhooks=[{"name": w.name, "url": str(w.url), "kinds": w.kinds} for w in spec.webhooks],
        emailRecipients=[r.address for r in spec.email_recipients],
        includePatientIdentity=spec.include_patient_identity,
        secretsChanged=sorted(secrets),
    )
    return _describe_receivers(session, facility, request)


def _delivery_reader(principal: Principal) -> None:
    if principal.role not in USER_ADMIN_ROLES:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail="administrators and facility administrators only"
        )


@router.get("/notifications/deliveries")
def deliveries(
    principal: PrincipalDep,
    session: SessionDep,
    state: Annotated[DeliveryState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Webhook calls and e-mails, newest first (of the facilities the caller may see)."""
    _delivery_reader(principal)
    return {
        "deliveries": notify_delivery.list_deliveries(
            session,
            state=state.value if state else None,
            facility_ids=principal.facility_ids,
            limit=limit,
            offset=offset,
        )
    }


@router.post("/notifications/deliveries/retry")
def retry_deliveries(
    principal: PrincipalDep, session: SessionDep, request: Request
) -> dict[str, int]:
    """Dead deliveries (of the facilities the caller may see) are tried again."""
    _delivery_reader(principal)
    retried = notify_delivery.retry_dead(session, principal.facility_ids)
    _audit(session, request, principal, "retry-deliveries", retried=retried)
    return {"retried": retried}
