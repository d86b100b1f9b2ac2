"""The API's audit events: who the request's principal is, as the audit trail names them.

The routers hand these events to the runtime's sink (``app.state.audit``, see
``noctis.core.audit``)."""

from __future__ import annotations

from typing import Any

from noctis.api.security import Principal
from noctis.core.audit import ActorType, AuditEvent


def actor_type(principal: Principal | None) -> ActorType:
    return "token" if principal is not None and principal.method == "token" else "user"


def web_event(
    principal: Principal | None,
    client: str,
    action: str,
    outcome: str,
    *,
    study_instance_uid: str | None = None,
    facility_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """One event of a web request (no principal: an anonymous caller)."""
    if principal is not None and principal.method == "oidc":
        detail = {"method": "oidc", **(detail or {})}
    return AuditEvent(
        action=action,
        outcome=outcome,
        actor=principal.subject if principal is not None else "anonymous",
        actor_type=actor_type(principal),
        client=client,
        study_instance_uid=study_instance_uid,
        facility_id=facility_id,
        detail=detail,
    )
