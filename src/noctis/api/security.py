"""Who is calling, and what they may see: the contract between the web routers and auth.

Routers depend on `PrincipalDep` (401 when nobody is logged in) and `AuditDep`; the auth
package installs the authenticator and the audit sink on `app.state` (see
``noctis.api.auth.install``). Routers never look at cookies or tokens themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends, HTTPException, Request, status

from noctis.core.audit import AuditSink
from noctis.core.roles import DELETE_ROLES, WRITE_ROLES, Role


@dataclass(frozen=True)
class Principal:
    subject: str  # user name, token owner, or OIDC subject
    role: Role
    facility_ids: frozenset[int] | None  # None: every facility (administrators)
    method: str = "session"  # session | token | oidc

    def can_read(self, facility_id: int) -> bool:
        return self.facility_ids is None or facility_id in self.facility_ids

    @property
    def can_write(self) -> bool:
        return self.role in WRITE_ROLES

    @property
    def can_delete(self) -> bool:
        return self.role in DELETE_ROLES

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


class Authenticator(Protocol):
    def authenticate(self, request: Request) -> Principal | None:
        """The principal the request proves, or None."""


def get_principal(request: Request) -> Principal:
    authenticator: Authenticator | None = getattr(request.app.state, "authenticator", None)
    principal = authenticator.authenticate(request) if authenticator is not None else None
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="authentication required",
            headers={"WWW-Authenticate": 'Bearer realm="noctis"'},
        )
    return principal


def get_audit(request: Request) -> AuditSink:
    sink: AuditSink | None = getattr(request.app.state, "audit", None)
    if sink is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="audit log unavailable")
    return sink


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


PrincipalDep = Annotated[Principal, Depends(get_principal)]
AuditDep = Annotated[AuditSink, Depends(get_audit)]
