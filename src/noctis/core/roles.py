"""Who may do what: the roles of Noctis's accounts (web users, API tokens, OIDC users)."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    RADIOLOGIST = "radiologist"
    TECHNOLOGIST = "technologist"
    REFERRING_PHYSICIAN = "referring-physician"  # read-only: final reports of its facilities
    FACILITY_ADMIN = "facility-admin"  # manages its own facilities' users, orders and worklist


WRITE_ROLES = frozenset({Role.ADMIN, Role.RADIOLOGIST, Role.TECHNOLOGIST})
# Who may delete studies, series and instances, and place or clear legal holds (issue 14):
# administrators only. A deletion cannot be undone, so it is not a radiologist's everyday write.
DELETE_ROLES = frozenset({Role.ADMIN})

# The reading workflow (issue 15).
# See the worklist (states, priorities, assignees, notes).
WORKLIST_ROLES = frozenset({Role.ADMIN, Role.FACILITY_ADMIN, Role.RADIOLOGIST, Role.TECHNOLOGIST})
# Claim studies, write and sign reports: radiologists only (an administrator assigns, never signs).
READING_ROLES = frozenset({Role.RADIOLOGIST})
# Assign a study to someone else, change its priority, cancel or reinstate it.
ASSIGN_ROLES = frozenset({Role.ADMIN, Role.FACILITY_ADMIN, Role.RADIOLOGIST})
# Orders, modality worklist entries, MPPS corrections and attachments (scanned requisitions).
ORDER_ROLES = frozenset({Role.ADMIN, Role.FACILITY_ADMIN, Role.TECHNOLOGIST})
# Manage users: every facility (admin) or the facilities one administers (facility-admin).
USER_ADMIN_ROLES = frozenset({Role.ADMIN, Role.FACILITY_ADMIN})
