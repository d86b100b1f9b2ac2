"""Who may do what: the roles of Noctis's accounts (web users, API tokens, OIDC users)."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    RADIOLOGIST = "radiologist"
    TECHNOLOGIST = "technologist"
    REFERRING_PHYSICIAN = "referring-physician"  # read-only


WRITE_ROLES = frozenset({Role.ADMIN, Role.RADIOLOGIST, Role.TECHNOLOGIST})
# Who may delete studies, series and instances, and place or clear legal holds (issue 14):
# administrators only. A deletion cannot be undone, so it is not a radiologist's everyday write.
DELETE_ROLES = frozenset({Role.ADMIN})
