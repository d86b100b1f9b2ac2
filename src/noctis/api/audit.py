"""The API's audit sink (``app.state.audit``): DICOMweb and REST events into the audit trail."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from noctis.api.security import Principal
from noctis.audit import ActorType, record_audit


def actor_type(principal: Principal | None) -> ActorType:
    return "token" if principal is not None and principal.method == "token" else "user"


class DatabaseAuditSink:
    """Writes each event as one row of the index's audit table (see `noctis.audit`)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def record(
        self,
        *,
        principal: Principal | None,
        client: str,
        action: str,
        outcome: str,
        study_instance_uid: str | None = None,
        facility_id: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        if principal is not None and principal.method == "oidc":
            detail = {"method": "oidc", **(detail or {})}
        record_audit(
            self._sessions,
            actor=principal.subject if principal is not None else "anonymous",
            actor_type=actor_type(principal),
            client=client,
            action=action,
            outcome=outcome,
            study_instance_uid=study_instance_uid,
            facility_id=facility_id,
            detail=detail,
        )
