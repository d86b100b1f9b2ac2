"""Local accounts: create users, grant facilities, check passwords.

Used by the REST admin API, the login page, `noctis user add` and `noctis serve` (first
administrator). Functions taking a `Session` leave committing to the caller.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from noctis.core import passwords
from noctis.core.roles import Role
from noctis.index.accounts import User, UserFacility
from noctis.index.models import Facility

log = logging.getLogger(__name__)

FIRST_ADMIN = "admin"
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,149}$")
MIN_PASSWORD_LENGTH = 8


class AccountError(ValueError):
    """The request cannot be applied: unknown user or facility, bad name, duplicate..."""


class OutOfScope(Exception):
    """A user administrator asked for what is not theirs to give (the API answers 403)."""


@dataclass(frozen=True)
class AdminScope:
    """Whose accounts a user administrator manages: every account (``facility_ids`` None, an
    administrator), or those whose facilities are all among its own (a facility
    administrator: never an administrator's account, never one granted no facility or a
    facility beyond its own)."""

    facility_ids: frozenset[int] | None

    def manages(self, user: User) -> bool:
        if self.facility_ids is None:
            return True
        if user.role == Role.ADMIN.value:
            return False
        granted = {grant.facility_id for grant in user.grants}
        return bool(granted) and granted <= self.facility_ids

    def check_grant(self, role: Role, facilities: Iterable[Facility]) -> None:
        """Raise OutOfScope unless this scope may give ``role`` with these facilities."""
        if self.facility_ids is None:
            return
        facilities = list(facilities)
        if role is Role.ADMIN:
            raise OutOfScope("a facility administrator cannot grant the administrator role")
        names = {f.name for f in facilities if f.id not in self.facility_ids}
        if names:
            raise OutOfScope(f"not among your facilities: {', '.join(sorted(names))}")
        if not facilities:
            raise OutOfScope("grant at least one of your facilities")


def _sessions(target: Any) -> sessionmaker[Session]:
    return getattr(target, "sessions", target)


def parse_role(role: str | Role) -> Role:
    try:
        return Role(role)
    except ValueError:
        choices = ", ".join(r.value for r in Role)
        raise AccountError(f"unknown role {role!r}; choose one of: {choices}") from None


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


def get_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def require_user(session: Session, username: str) -> User:
    user = get_user(session, username)
    if user is None:
        raise AccountError(f"no user named {username!r}")
    return user


def resolve_facilities(session: Session, facilities: Iterable[str | int]) -> list[Facility]:
    """Facilities by name or id; AccountError naming those that do not exist."""
    wanted = list(dict.fromkeys(facilities))
    if not wanted:
        return []
    names = [f for f in wanted if isinstance(f, str)]
    ids = [f for f in wanted if isinstance(f, int)]
    found = list(
        session.scalars(select(Facility).where(Facility.name.in_(names) | Facility.id.in_(ids)))
    )
    known = {f.name for f in found} | {f.id for f in found}
    missing = [str(f) for f in wanted if f not in known]
    if missing:
        raise AccountError(f"unknown facilities: {', '.join(missing)}")
    return found


def set_facilities(session: Session, user: User, facilities: Iterable[str | int]) -> None:
    """Replace the user's grants with exactly these facilities."""
    resolved = resolve_facilities(session, facilities)
    user.grants.clear()
    session.flush()
    user.grants.extend(UserFacility(facility_id=f.id) for f in resolved)
    session.flush()


def create_user(
    session: Session,
    username: str,
    role: str | Role,
    *,
    password: str | None = None,
    facilities: Iterable[str | int] = (),
    display_name: str = "",
    source: str = "local",
) -> User:
    if not USERNAME.match(username):
        raise AccountError(
            "a user name is 1-150 letters, digits and . _ @ + - (starting with a letter or digit)"
        )
    if get_user(session, username) is not None:
        raise AccountError(f"user {username!r} already exists")
    if password is not None:
        check_password(password)
    user = User(
        username=username,
        display_name=display_name,
        role=parse_role(role).value,
        password_hash=passwords.hash_password(password) if password is not None else None,
        source=source,
    )
    session.add(user)
    session.flush()
    set_facilities(session, user, facilities)
    return user


def set_password(session: Session, user: User, password: str) -> None:
    check_password(password)
    user.password_hash = passwords.hash_password(password)


def end_sessions(session: Session, user: User) -> None:
    """Log the user out of every browser: after a password change, a disable, a reset."""
    from sqlalchemy import delete

    from noctis.index.accounts import WebSession

    session.execute(delete(WebSession).where(WebSession.user_id == user.id))


def count_admins(session: Session) -> int:
    return int(
        session.scalar(
            select(func.count(User.id)).where(User.role == Role.ADMIN.value, User.enabled)
        )
        or 0
    )


def add_user(
    runtime: Any,
    username: str,
    role: str | Role = Role.RADIOLOGIST,
    *,
    password: str | None = None,
    facilities: Iterable[str | int] = (),
    display_name: str = "",
) -> str:
    """`noctis user add`: create a local user; the password (generated when not given).

    `runtime` is a Runtime (or a sessionmaker). Raises AccountError with a message for
    the user when the name is taken, the role or a facility is unknown.
    """
    if parse_role(role) is Role.FACILITY_ADMIN and not list(facilities):
        raise AccountError("a facility administrator needs the facilities it administers (-F)")
    secret = password if password is not None else passwords.generate_password()
    with _sessions(runtime).begin() as session:
        create_user(
            session,
            username,
            role,
            password=secret,
            facilities=facilities,
            display_name=display_name,
        )
    return secret


def reset_password(runtime: Any, username: str, password: str | None = None) -> str:
    """`noctis user passwd`: set a user's password (generated when not given), re-enable the
    account, and end its browser sessions; the new password."""
    secret = password if password is not None else passwords.generate_password()
    with _sessions(runtime).begin() as session:
        user = require_user(session, username)
        set_password(session, user, secret)
        user.enabled = True
        end_sessions(session, user)
    return secret


def ensure_first_admin(runtime: Any, password: str | None) -> tuple[str, str | None]:
    """Create the administrator `admin` when the index has no user yet.

    The password is `password` (the operator's NOCTIS_ADMIN_PASSWORD, read by the caller),
    else a random one. Returns (user name, password to show once): the password is None when
    nothing was created or when the operator chose it (it is theirs already; never print it
    back).
    """
    chosen = password is not None
    with _sessions(runtime).begin() as session:
        existing = session.scalar(select(func.count(User.id))) or 0
        if existing:
            admin = session.scalar(
                select(User.username).where(User.role == Role.ADMIN.value).order_by(User.id)
            )
            return admin or FIRST_ADMIN, None
        secret = password if password is not None else passwords.generate_password()
        create_user(session, FIRST_ADMIN, Role.ADMIN, password=secret, display_name="Administrator")
    log.info("created the first administrator %r", FIRST_ADMIN)
    return FIRST_ADMIN, None if chosen else secret
