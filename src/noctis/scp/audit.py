"""The DIMSE side of the audit trail: who sent, queried or retrieved which studies.

Stores are summed per association and study, and written when the association ends (one
event per study and outcome with the instance count, as DICOM's "instances transferred"
audit messages do), so a 300-slice series costs one audit row, not 300. Queries, moves and
gets are written as they are answered; refused associations too. Recording never fails the
DIMSE exchange: the events go to the runtime's sink (``noctis.core.audit``).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from noctis.core.audit import AuditAction, AuditEvent, AuditOutcome, AuditSink
from noctis.core.facilities import Caller

if TYPE_CHECKING:
    from pynetdicom.association import Association


class DimseAudit:
    def __init__(self, sink: AuditSink) -> None:
        self.sink = sink
        self._stores: dict[int, tuple[Caller, str, Counter[tuple[str, str]]]] = {}
        self._lock = threading.Lock()

    def stored(
        self, assoc: Association, caller: Caller, study_uid: str | None, outcome: AuditOutcome
    ) -> None:
        with self._lock:
            entry = self._stores.get(id(assoc))
            if entry is None:
                entry = (caller, _address(assoc), Counter())
                self._stores[id(assoc)] = entry
            entry[2][(study_uid or "", outcome.value)] += 1

    def association_ended(self, assoc: Association) -> None:
        with self._lock:
            entry = self._stores.pop(id(assoc), None)
        if entry is None:
            return
        caller, address, counts = entry
        for (study_uid, outcome), instances in sorted(counts.items()):
            self._record(
                caller.ae_title,
                address,
                AuditAction.STORE,
                outcome,
                study_uid or None,
                caller.facility_id,
                {"service": "C-STORE", "instances": instances},
            )

    def queried(
        self, assoc: Association, caller: Caller, level: str, keys: dict[str, Any], results: int
    ) -> None:
        study = keys.get("StudyInstanceUID")
        self._record(
            caller.ae_title,
            _address(assoc),
            AuditAction.QUERY,
            AuditOutcome.SUCCESS,
            study if isinstance(study, str) and "\\" not in study and study else None,
            caller.facility_id,
            {"service": "C-FIND", "level": level, "keys": keys, "results": results},
        )

    def retrieved(
        self,
        assoc: Association,
        caller: Caller,
        service: str,
        studies: Iterable[str],
        *,
        destination: str | None,
        completed: int,
        failed: int,
    ) -> None:
        action = AuditAction.MOVE if service == "move" else AuditAction.RETRIEVE
        outcome = AuditOutcome.SUCCESS if failed == 0 else AuditOutcome.FAILURE
        for study_uid in sorted(set(studies)):
            self._record(
                caller.ae_title,
                _address(assoc),
                action,
                outcome,
                study_uid,
                caller.facility_id,
                {
                    "service": f"C-{service.upper()}",
                    "destination": destination,
                    "completed": completed,
                    "failed": failed,
                },
            )

    def refused(self, calling_ae: str, address: str, reason: str) -> None:
        self._record(
            calling_ae, address, "associate", AuditOutcome.DENIED, None, None, {"reason": reason}
        )

    def _record(
        self,
        actor: str,
        client: str,
        action: str,
        outcome: str,
        study_uid: str | None,
        facility_id: int | None,
        detail: dict[str, Any],
    ) -> None:
        self.sink.record(
            AuditEvent(
                action=action,
                outcome=outcome,
                actor=actor or "(no AE title)",
                actor_type="ae",
                client=client,
                study_instance_uid=study_uid,
                facility_id=facility_id,
                detail=detail,
            )
        )


def _address(assoc: Association) -> str:
    return str(assoc.requestor.address)
