"""What the write path leaves for an administrator to reconcile: an audit event and a count.

- ``demographics-conflict``: an instance named a known patient (same facility, PatientID and
  IssuerOfPatientID) or a known study with another name, birth date or sex. Nothing stored
  changed: the study keeps the demographics it arrived with, and other studies theirs.
- ``duplicate-discarded``: a SOP Instance UID already stored arrived with another data set and
  the duplicate policy ``keep-first`` kept the first (the sender was answered Success).

Administrators find the events at ``GET /api/audit?action=demographics-conflict`` (or
``duplicate-discarded``), and watch the counters ``noctis_demographics_conflicts_total`` and
``noctis_duplicates_discarded_total`` on ``/metrics``. Both are rare: recording them costs one
audit insert of its own (never part of, nor a failure of, the store).

prometheus_client is imported inside functions: an SCP process must set its multiprocess
directory before the first import (see ``noctis.scp.metrics``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from noctis.core.audit import ActorType, AuditEvent, AuditOutcome

if TYPE_CHECKING:
    from noctis.core.runtime import Runtime
    from noctis.dicom.header import InstanceHeader
    from noctis.index.backend import DemographicsConflict

DEMOGRAPHICS_CONFLICT = "demographics-conflict"
DUPLICATE_DISCARDED = "duplicate-discarded"
_METRIC_NAMES = ("noctis_demographics_conflicts", "noctis_duplicates_discarded")


@dataclass(frozen=True)
class Sender:
    """Who sent an instance, as the audit trail names them."""

    actor: str
    actor_type: ActorType
    client: str

    def event(self, action: str, **fields: Any) -> AuditEvent:
        """An audit event of this sender (the other fields as `AuditEvent`'s)."""
        return AuditEvent(
            action=action,
            actor=self.actor,
            actor_type=self.actor_type,
            client=self.client,
            **fields,
        )


UNKNOWN_SENDER = Sender("(unknown)", "ae", "")


@dataclass(frozen=True)
class _Counters:
    demographics_conflicts: Any
    duplicates_discarded: Any


_counters: _Counters | None = None
_lock = threading.Lock()


def _get_counters() -> _Counters:
    global _counters
    if _counters is None:
        with _lock:  # stores run on several threads: registering twice would raise
            if _counters is None:
                from prometheus_client import Counter

                _counters = _Counters(
                    Counter(
                        _METRIC_NAMES[0],
                        "instances whose patient demographics differ from those stored "
                        "(audit action demographics-conflict)",
                        ["facility"],
                    ),
                    Counter(
                        _METRIC_NAMES[1],
                        "instances discarded because their SOP Instance UID was stored with "
                        "another data set (audit action duplicate-discarded)",
                        ["facility"],
                    ),
                )
    return _counters


def demographics_conflict(
    runtime: Runtime,
    facility_id: int,
    facility_name: str,
    sender: Sender,
    header: InstanceHeader,
    conflict: DemographicsConflict,
) -> None:
    _get_counters().demographics_conflicts.labels(facility=facility_name).inc()
    runtime.audit.record_durably(
        sender.event(
            DEMOGRAPHICS_CONFLICT,
            outcome=AuditOutcome.SUCCESS,  # the instance was stored, with its own demographics
            study_instance_uid=header.study_instance_uid,
            facility_id=facility_id,
            detail={
                "patient_id": header.patient_id,
                "issuer_of_patient_id": header.issuer_of_patient_id,
                "sop_instance_uid": header.sop_instance_uid,
                "compared_with": conflict.compared_with,
                "stored": _demographics(
                    conflict.patient_name, conflict.patient_birth_date, conflict.patient_sex
                ),
                "received": _demographics(
                    header.patient_name, header.patient_birth_date, header.patient_sex
                ),
            },
        )
    )


def duplicate_discarded(
    runtime: Runtime,
    facility_id: int,
    facility_name: str,
    sender: Sender,
    header: InstanceHeader,
    *,
    kept_sha256: str | None,
    discarded_sha256: str,
) -> None:
    _get_counters().duplicates_discarded.labels(facility=facility_name).inc()
    runtime.audit.record_durably(
        sender.event(
            DUPLICATE_DISCARDED,
            outcome=AuditOutcome.SUCCESS,  # the sender was answered Success
            study_instance_uid=header.study_instance_uid,
            facility_id=facility_id,
            detail={
                "sop_instance_uid": header.sop_instance_uid,
                "transfer_syntax_uid": header.transfer_syntax_uid,
                "kept_sha256": kept_sha256,
                "discarded_sha256": discarded_sha256,
            },
        )
    )


def metrics_text() -> bytes:
    """These counters in Prometheus' text format (for a /metrics page of its own registry)."""
    from prometheus_client import REGISTRY, generate_latest

    _get_counters()
    names = [f"{name}_total" for name in _METRIC_NAMES]
    names += [f"{name}_created" for name in _METRIC_NAMES]
    return generate_latest(REGISTRY.restricted_registry(names))


def _demographics(name: str, birth_date: str, sex: str) -> dict[str, str]:
    return {"PatientName": name, "PatientBirthDate": birth_date, "PatientSex": sex}
