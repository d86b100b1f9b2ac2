"""Users, their facility grants, and API tokens.

Administrators manage every user and every token. A facility administrator manages the users
of its own facilities only: it sees, creates, changes, disables and deletes accounts whose
facilities are all among its own, grants no role beyond facility-admin and no facility beyond
its own; any other account is 404 to it, as if it did not exist. Tokens stay with
administrators. Every change is audited in its transaction, every refusal as denied.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field
from sqlalchemy import select

from noctis.api.auth.credentials import issue_token, now, revoke_token
from noctis.api.rest.deps import (
    AdminAuditDep,
    AdminDep,
    SessionDep,
    UserAdminAudit,
    UserAdminAuditDep,
    UserAdminDep,
)
from noctis.api.security import Principal
from noctis.core import accounts
from noctis.core.roles import Role
from noctis.index.accounts import ApiToken, User

router = APIRouter(tags=["users and tokens"])


class UserOut(BaseModel):
    username: str
    display_name: str
    role: Role
    facilities: list[str] = Field(description="granted facilities (administrators see all)")
    enabled: bool
    source: str
    created_at: datetime
    last_login_at: datetime | None


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=150)
    role: Role
    password: str | None = Field(
        None, max_length=1024, description="omit to have one generated and returned once"
    )
    facilities: list[str] = Field(default_factory=list, description="facility names")
    display_name: str = Field("", max_length=255)


class UserCreated(UserOut):
    password: str | None = Field(description="the generated password, shown only now")


class UserUpdate(BaseModel):
    role: Role | None = None
    password: str | None = Field(None, max_length=1024)
    facilities: list[str] | None = None
    display_name: str | None = Field(None, max_length=255)
    enabled: bool | None = None


class TokenOut(BaseModel):
    id: int
    username: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreate(BaseModel):
    username: str
    name: str = Field("", max_length=100)
    expires_in_days: int | None = Field(None, ge=1, le=3650)


class TokenCreated(TokenOut):
    token: str = Field(description="the secret: shown only now, send as `Authorization: Bearer`")


def user_out(user: User) -> UserOut:
    return UserOut(
        username=user.username,
        display_name=user.display_name,
        role=Role(user.role),
        facilities=sorted(g.facility.name for g in user.grants),
        enabled=user.enabled,
        source=user.source,
        created_at=user.created_at,
        last_login_at=user.last_login_at,
    )


def token_out(token: ApiToken) -> TokenOut:
    return TokenOut(
        id=token.id,
        username=token.user.username,
        name=token.name,
        prefix=token.prefix,
        created_at=token.created_at,
        expires_at=token.expires_at,
        last_used_at=token.last_used_at,
        revoked_at=token.revoked_at,
    )


def _bad(exc: accounts.AccountError) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc))


def _scope(principal: Principal) -> accounts.AdminScope:
    """Administrators manage every account; a facility administrator those of its facilities."""
    if principal.is_admin:
        return accounts.AdminScope(None)
    return accounts.AdminScope(principal.facility_ids or frozenset())


def _user(
    session: SessionDep,
    username: str,
    scope: accounts.AdminScope | None = None,
    audit: UserAdminAudit | None = None,
    operation: str = "user.read",
) -> User:
    """The user, or 404: also when it exists outside the caller's scope (a facility
    administrator never learns of other facilities' accounts; the attempt is audited)."""
    user = accounts.get_user(session, username)
    if user is not None and scope is not None and not scope.manages(user):
        if audit is not None:
            audit.denied(operation, username, "outside the caller's facilities")
        user = None
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no user named {username!r}")
    return user


def _refused(audit: UserAdminAudit, operation: str, target: str, exc: Exception) -> HTTPException:
    audit.denied(operation, target, str(exc))
    return HTTPException(status.HTTP_403_FORBIDDEN, detail=str(exc))


@router.get("/users")
def list_users(principal: UserAdminDep, session: SessionDep) -> list[UserOut]:
    scope = _scope(principal)
    users = session.scalars(select(User).order_by(User.username))
    return [user_out(u) for u in users if scope.manages(u)]


@router.post("/users", status_code=status.HTTP_201_CREATED)
def create_user(
    body: UserCreate, principal: UserAdminDep, session: SessionDep, audit: UserAdminAuditDep
) -> UserCreated:
    try:
        _scope(principal).check_grant(
            body.role, accounts.resolve_facilities(session, body.facilities)
        )
    except accounts.AccountError as exc:
        raise _bad(exc) from exc
    except accounts.OutOfScope as exc:
        raise _refused(audit, "user.create", body.username, exc) from exc
    generated = None if body.password is not None else accounts.passwords.generate_password()
    try:
        user = accounts.create_user(
            session,
            body.username,
            body.role,
            password=body.password if body.password is not None else generated,
            facilities=body.facilities,
            display_name=body.display_name,
        )
    except accounts.AccountError as exc:
        raise _bad(exc) from exc
    audit("user.create", user.username, role=user.role, facilities=body.facilities)
    return UserCreated(**user_out(user).model_dump(), password=generated)


@router.get("/users/{username}")
def get_user(
    username: str, principal: UserAdminDep, session: SessionDep, audit: UserAdminAuditDep
) -> UserOut:
    return user_out(_user(session, username, _scope(principal), audit))


@router.patch("/users/{username}")
def update_user(
    username: str,
    body: UserUpdate,
    principal: UserAdminDep,
    session: SessionDep,
    audit: UserAdminAuditDep,
) -> UserOut:
    scope = _scope(principal)
    user = _user(session, username, scope, audit, "user.update")
    if body.role is not None or body.facilities is not None:
        try:
            granted = (
                accounts.resolve_facilities(session, body.facilities)
                if body.facilities is not None
                else [grant.facility for grant in user.grants]
            )
            scope.check_grant(body.role or Role(user.role), granted)
        except accounts.AccountError as exc:
            raise _bad(exc) from exc
        except accounts.OutOfScope as exc:
            raise _refused(audit, "user.update", username, exc) from exc
    demoting = (body.role not in (None, Role.ADMIN) or body.enabled is False) and (
        user.role == Role.ADMIN.value and user.enabled
    )
    if demoting and accounts.count_admins(session) <= 1:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="the last administrator must stay")
    try:
        if body.role is not None:
            user.role = body.role.value
        if body.password is not None:
            accounts.set_password(session, user, body.password)
        if body.facilities is not None:
            accounts.set_facilities(session, user, body.facilities)
        if body.display_name is not None:
            user.display_name = body.display_name
        # A new password or a disable logs the user out everywhere (as `noctis user passwd`
        # does), so that re-enabling later never revives an old cookie. API tokens stay:
        # administrators issue and revoke those (DELETE /api/tokens/{id}).
        enabled_flips = body.enabled is not None and body.enabled != user.enabled
        if body.password is not None or enabled_flips:
            accounts.end_sessions(session, user)
        if body.enabled is not None:
            user.enabled = body.enabled
    except accounts.AccountError as exc:
        raise _bad(exc) from exc
    changed = sorted(body.model_dump(exclude_none=True, exclude={"password"}))
    if body.password is not None:
        changed.append("password")
    audit("user.update", username, changed=changed)
    session.flush()
    return user_out(user)


@router.delete("/users/{username}", status_code=status.HTTP_204_NO_CONTENT)
def delete_user(
    username: str, principal: UserAdminDep, session: SessionDep, audit: UserAdminAuditDep
) -> None:
    user = _user(session, username, _scope(principal), audit, "user.delete")
    if user.username == principal.subject:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="you cannot delete yourself")
    if user.role == Role.ADMIN.value and user.enabled and accounts.count_admins(session) <= 1:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="the last administrator must stay")
    session.delete(user)  # its grants, tokens and sessions go with it
    audit("user.delete", username)


@router.get("/tokens")
def list_tokens(
    _: AdminDep, session: SessionDep, username: str | None = None, include_revoked: bool = False
) -> list[TokenOut]:
    query = select(ApiToken).join(ApiToken.user).order_by(ApiToken.id)
    if username is not None:
        query = query.where(User.username == username)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return [token_out(t) for t in session.scalars(query)]


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
def create_token(
    body: TokenCreate, _: AdminDep, session: SessionDep, audit: AdminAuditDep
) -> TokenCreated:
    user = _user(session, body.username)
    expires = now() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    token, secret = issue_token(session, user, body.name, expires_at=expires)
    audit("token.create", body.username, token_id=token.id, name=body.name)
    return TokenCreated(**token_out(token).model_dump(), token=secret)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_token(token_id: int, _: AdminDep, session: SessionDep, audit: AdminAuditDep) -> None:
    if not revoke_token(session, token_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such live token")
    audit("token.revoke", str(token_id))
