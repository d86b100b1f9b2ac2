"""Facility: the registry the SCP and API enforce, synced into the index database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from noctis.core.consistency import facility_findings
from noctis.core.facilities import (
    FacilityConflict,
    FacilityNameTaken,
    apply_facility,
    check_claim,
    disable_facility,
    facility_usage,
)
from noctis.core.quota import quota_exceeded
from noctis.index.db import transaction
from noctis.index.models import Facility
from noctis.operator.conditions import CONSISTENT, QUOTA_EXCEEDED, READY, SYNCED, Cond, now
from noctis.operator.context import Operator
from noctis.operator.errors import Blocked, parse_spec
from noctis.operator.kinds import FACILITIES, STORAGEPOOLS
from noctis.specs.archive import facility_queue
from noctis.specs.facility import FacilitySpec


def reconcile(op: Operator, body: dict[str, Any], *, apply_always: bool) -> None:
    """Sync the registry entry (when it differs from the spec) and report usage.

    A facility name is one entry whatever the namespace: while another namespace's Facility
    holds it, this one is refused (NameTaken) and that entry is not touched; once that
    Facility is deleted (its entry disabled), this one claims the entry, studies included.
    """
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    spec = parse_spec(FacilitySpec, body.get("spec"))
    sessions = op.index_sessions()
    wanted = spec.model_dump(mode="json", by_alias=True)
    released_by = None
    try:
        with transaction(sessions) as session:
            row = session.scalar(select(Facility).where(Facility.name == name))
            check_claim(session, row, namespace)
            if row is not None and row.namespace not in (None, namespace):
                released_by = row.namespace
            synced = (
                row is not None
                and row.enabled
                and row.namespace == namespace
                and row.spec == wanted
            )
            if apply_always or not synced:
                row = apply_facility(session, name, spec, namespace=namespace)
            assert row is not None
            studies, size = facility_usage(session, row.id)
            findings = facility_findings(session, row.id)
            last = row.last_association_at
            quota = (row.quota_bytes, row.quota_studies)
    except FacilityNameTaken as exc:
        raise Blocked("NameTaken", str(exc)) from exc
    except FacilityConflict as exc:
        raise Blocked("Conflict", str(exc)) from exc
    except IntegrityError as exc:  # e.g. another namespace's Facility of this name, just added
        raise Blocked(
            "Conflict", f"the registry changed meanwhile; retrying: {exc.orig}", delay=2
        ) from exc
    except SQLAlchemyError as exc:
        raise Blocked("IndexUnavailable", f"index database: {type(exc).__name__}: {exc}") from exc
    if released_by is not None:
        op.events(
            body,
            "Normal",
            "Claimed",
            f"facility name {name} was released when the Facility in namespace {released_by} "
            f"was deleted; its registry entry is now this namespace's, with the {studies} "
            "studies stored under it",
        )

    conditions = [Cond(SYNCED, True, "Applied", "registry entry matches the spec")]
    pool_missing = spec.storage_pool is not None and (
        op.kube.get(STORAGEPOOLS, namespace, spec.storage_pool) is None
    )
    if pool_missing:
        conditions.append(
            Cond(
                READY,
                False,
                "StoragePoolNotFound",
                f"StoragePool {spec.storage_pool} not found in namespace {namespace}",
            )
        )
    else:
        conditions.append(
            Cond(
                READY,
                True,
                "Synced",
                f"{len(spec.application_entities)} application entit(ies) registered and enabled",
            )
        )
    conditions.append(_quota_condition(*quota, size, studies))
    missing = findings.get(("missing", "open"), 0)
    conditions.append(_consistency_condition(missing))
    fields = {
        "studies": studies,
        "bytes": size,
        "usedBytes": size,
        "applicationEntities": len(spec.application_entities),
        "taskQueue": facility_queue(name),
        "lastAssociation": last.strftime("%Y-%m-%dT%H:%M:%SZ") if last else "",
        "usageUpdated": now(),
        "consistency": {
            "missingObjects": missing,
            "orphansRemoved": findings.get(("orphan", "removed"), 0),
        },
    }
    op.write_status(FACILITIES, body, fields, conditions)
    if pool_missing:
        op.events(body, "Warning", "StoragePoolNotFound", conditions[-1].message)


def _quota_condition(
    max_bytes: int | None, max_studies: int | None, used: int, studies: int
) -> Cond:
    """QuotaExceeded: True while the facility is at or over a quota (its new instances are
    refused: C-STORE 0xA700, STOW-RS 507), with the usage in the message."""
    over = quota_exceeded(max_bytes, max_studies, used, studies)
    text = f"{used} bytes" + (f" of maxBytes {max_bytes}" if max_bytes is not None else "")
    text += f", {studies} studies"
    text += f" of maxStudies {max_studies}" if max_studies is not None else ""
    if over:
        return Cond(
            QUOTA_EXCEEDED,
            True,
            "AtQuota",
            f"{' and '.join(over)} reached ({text}): new instances are refused",
        )
    if max_bytes is None and max_studies is None:
        return Cond(QUOTA_EXCEEDED, False, "NoQuota", f"no quota set ({text})")
    return Cond(QUOTA_EXCEEDED, False, "WithinQuota", text)


def _consistency_condition(missing: int) -> Cond:
    """Consistent: False while the consistency check finds instances whose object is gone
    (never deleted from the index silently: an administrator decides, GET /api/consistency)."""
    if missing:
        return Cond(
            CONSISTENT,
            False,
            "ObjectsMissing",
            f"{missing} indexed instance(s) have no object in the store (GET /api/consistency "
            "lists them): restore the objects or delete the instances",
        )
    return Cond(
        CONSISTENT, True, "NoFindings", "every indexed instance the check saw has its object"
    )


def disable(op: Operator, body: dict[str, Any]) -> None:
    """The Facility is being deleted: refuse its callers from now on; its studies stay.
    An entry another namespace's Facility holds is not this one's to disable."""
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    sessions = op.index_sessions()
    try:
        with transaction(sessions) as session:
            found = disable_facility(session, name, namespace=namespace)
    except FacilityNameTaken as exc:
        op.events(
            body,
            "Normal",
            "NotOwned",
            f"facility {name} is registered to the Facility in namespace {exc.owner}; "
            "its registry entry is left as it is",
        )
        return
    except SQLAlchemyError as exc:
        raise Blocked("IndexUnavailable", f"index database: {type(exc).__name__}: {exc}") from exc
    message = (
        f"facility {name} disabled in the registry; its studies are kept"
        if found
        else f"facility {name} was not in the registry"
    )
    op.events(body, "Normal", "Disabled", message)
