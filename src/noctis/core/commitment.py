"""Storage commitment: does the archive hold these instances durably, for this facility?

The Storage Commitment Push Model (PS3.4 Annex J) asks the archive to take responsibility for
a list of (SOP Class UID, SOP Instance UID) references. The archive commits to an instance
only when both halves of what ingest made durable are still there: the index row, in the
requester's own facility, and the object in the store. Each failure carries the Failure
Reason PS3.4 J.3.3 and C.14.1.1 name:

- 0x0112 no such object instance: no row for the instance in the requester's facility (never
  received, or received by another facility: facilities never see each other's instances);
- 0x0119 class/instance conflict: the instance is filed under another SOP Class;
- 0x0110 processing failure: the index has the instance but its object is gone from the store
  (removed behind the index's back), or the store cannot be asked. The archive did receive
  the instance and cannot vouch for it now: that is its own failure, not "never received",
  and an administrator must reconcile the index with the store (logged as an error).

The DIMSE side (N-ACTION, N-EVENT-REPORT) is `noctis.scp.commitment`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from noctis.index.models import Instance
from noctis.storage import ObjectStore

log = logging.getLogger(__name__)

# Failure Reason (0008,1197) values, PS3.4 J.3.3 / C.14.1.1
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119

# UIDs are at most 64 characters (PS3.5 9.1): one IN (...) list per this many references.
_BATCH = 500


@dataclass(frozen=True)
class Reference:
    """One referenced instance of a storage commitment request."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass
class CommitmentResult:
    """The outcome for every reference of a request, in the request's order."""

    committed: list[Reference] = field(default_factory=list)
    failed: list[tuple[Reference, int]] = field(default_factory=list)

    @property
    def all_committed(self) -> bool:
        return not self.failed


def check_commitment(
    session: Session, store: ObjectStore, facility_id: int, references: Sequence[Reference]
) -> CommitmentResult:
    """Which of ``references`` the archive holds durably for facility ``facility_id``."""
    rows = _indexed(session, facility_id, [ref.sop_instance_uid for ref in references])
    result = CommitmentResult()
    for ref in references:
        row = rows.get(ref.sop_instance_uid)
        if row is None:
            result.failed.append((ref, NO_SUCH_OBJECT_INSTANCE))
            continue
        sop_class_uid, object_key = row
        if sop_class_uid != ref.sop_class_uid:
            result.failed.append((ref, CLASS_INSTANCE_CONFLICT))
            continue
        try:
            present = store.exists(object_key)
        except Exception as exc:
            log.warning("storage commitment: cannot check object %s: %s", object_key, exc)
            result.failed.append((ref, PROCESSING_FAILURE))
            continue
        if not present:
            log.error(
                "storage commitment: instance %s is indexed but its object %s is missing from "
                "the store; the index and the store need reconciling",
                ref.sop_instance_uid,
                object_key,
            )
            result.failed.append((ref, PROCESSING_FAILURE))
            continue
        result.committed.append(ref)
    return result


def _indexed(session: Session, facility_id: int, uids: list[str]) -> dict[str, tuple[str, str]]:
    """SOP Instance UID -> (SOP Class UID, object key) of the facility's indexed instances."""
    found: dict[str, tuple[str, str]] = {}
    unique = list(dict.fromkeys(uids))
    for start in range(0, len(unique), _BATCH):
        batch = unique[start : start + _BATCH]
        rows = session.execute(
            select(Instance.sop_instance_uid, Instance.sop_class_uid, Instance.object_key).where(
                Instance.facility_id == facility_id, Instance.sop_instance_uid.in_(batch)
            )
        )
        for sop_instance_uid, sop_class_uid, object_key in rows:
            found[sop_instance_uid] = (sop_class_uid, object_key)
    return found
