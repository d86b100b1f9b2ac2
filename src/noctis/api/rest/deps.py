"""Dependencies of the REST API: the index session, and who may call what."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.orm import Session

from noctis.api.audit import actor_type
from noctis.api.auth.context import AuthContextDep
from noctis.api.security import AuditDep, Principal, PrincipalDep, client_address
from noctis.core.audit import AuditAction, AuditEvent, AuditOutcome, add_to_session
from noctis.core.roles import USER_ADMIN_ROLES


def get_session(context: AuthContextDep) -> Iterator[Session]:
    with context.runtime.sessions.begin() as session:
        yield session


def require_user_admin(principal: PrincipalDep) -> Principal:
    if principal.role not in USER_ADMIN_ROLES:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail="administrators and facility administrators only"
        )
    return principal


def require_admin(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="administrators only")
    return principal


# scope="function": the transaction commits when the route returns, before the response is
# sent. Otherwise a client could act on a 2xx before the change is committed (a disabled user's
# next request still signed in), and a failed commit would follow a 2xx already sent.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
AdminDep = Annotated[Principal, Depends(require_admin)]
# Users: administrators, and facility administrators for their own facilities' users.
UserAdminDep = Annotated[Principal, Depends(require_user_admin)]


class AdminAudit:
    """Records administrative changes (users, tokens) in the audit trail, in the same
    transaction as the change: both are committed, or neither."""

    def __init__(self, request: Request, principal: AdminDep, session: SessionDep) -> None:
        self._client = client_address(request)
        self._principal = principal
        self._session = session

    def __call__(self, operation: str, target: str, **detail: Any) -> None:
        event = AuditEvent(
            action=AuditAction.ADMIN,
            outcome=AuditOutcome.SUCCESS,
            actor=self._principal.subject,
            actor_type=actor_type(self._principal),
            client=self._client,
            detail={"operation": operation, "target": target, **detail},
        )
        add_to_session(self._session, event)


AdminAuditDep = Annotated[AdminAudit, Depends()]


class UserAdminAudit(AdminAudit):
    """`AdminAudit` for the user routes, which facility administrators call too; refusals
    are recorded as well (outcome denied), outside the transaction the refusal rolls back."""

    def __init__(
        self, request: Request, principal: UserAdminDep, session: SessionDep, sink: AuditDep
    ) -> None:
        self._client = client_address(request)
        self._principal = principal
        self._session = session
        self._sink = sink

    def denied(self, operation: str, target: str, reason: str) -> None:
        self._sink.record(
            AuditEvent(
                action=AuditAction.ADMIN,
                outcome=AuditOutcome.DENIED,
                actor=self._principal.subject,
                actor_type=actor_type(self._principal),
                client=self._client,
                detail={"operation": operation, "target": target, "reason": reason},
            )
        )


UserAdminAuditDep = Annotated[UserAdminAudit, Depends()]
