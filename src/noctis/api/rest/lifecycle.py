"""Deleting studies, legal holds and the consistency check, for administrators (``/api``).

DELETE answers what it removed (DICOMweb's DELETE answers 204); a study on legal hold or
under the storage pool's object lock answers 409 with the reason. ``?facility=NAME`` picks
the facility when several hold a UID, as everywhere else.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from noctis.api.audit import actor_type
from noctis.api.dicomweb.access import locate
from noctis.api.dicomweb.context import ContextDep, WebContext
from noctis.api.dicomweb.delete import delete_target
from noctis.api.rest.deps import AdminDep
from noctis.core.consistency import (
    MISSING,
    ORPHAN,
    check_consistency,
    finding_counts,
    open_findings,
)
from noctis.core.deletion import Actor, Deleted, Hold, HoldError, clear_hold, get_hold, place_hold
from noctis.core.runtime import Runtime

router = APIRouter(tags=["lifecycle"])


class DeletedOut(BaseModel):
    instances: int = Field(description="instances removed from the index")
    size_bytes: int
    study_removed: bool = Field(description="the study has no instance left and is gone")
    objects: str = "removed from the index; their objects are swept in the background"


class HoldIn(BaseModel):
    reason: str = Field(min_length=1, max_length=1024, description="why (shown on refusals)")


class HoldOut(BaseModel):
    study_instance_uid: str
    facility: str
    reason: str
    placed_by: str
    placed_at: datetime


class FindingOut(BaseModel):
    object_key: str
    facility_id: int | None
    size_bytes: int | None
    found_at: datetime
    state: str


class ConsistencyOut(BaseModel):
    counts: dict[str, dict[str, int]] = Field(description="kind -> state -> findings")
    tombstones_pending: int = Field(description="objects of deletions still to be swept")
    tombstones_failing: int = Field(
        description="of those, the ones the store refused at the last try (retried each sweep)"
    )
    missing: list[FindingOut] = Field(description="index rows without objects (latest first)")
    orphans: list[FindingOut] = Field(description="objects without index rows (latest first)")


class CheckOut(BaseModel):
    skipped: bool = Field(description="another replica is checking right now")
    checked_objects: int
    checked_rows: int
    orphans_removed: list[str]
    orphans_within_grace: int
    missing: list[str]


def _out(deleted: Deleted) -> DeletedOut:
    return DeletedOut(
        instances=deleted.instances,
        size_bytes=deleted.size_bytes,
        study_removed=deleted.study_removed,
    )


@router.delete("/studies/{study}")
def delete_study(study: str, ctx: ContextDep) -> DeletedOut:
    return _out(delete_target(ctx, study))


@router.delete("/studies/{study}/series/{series}")
def delete_series(study: str, series: str, ctx: ContextDep) -> DeletedOut:
    return _out(delete_target(ctx, study, series))


@router.delete("/studies/{study}/series/{series}/instances/{instance}")
def delete_instance(study: str, series: str, instance: str, ctx: ContextDep) -> DeletedOut:
    return _out(delete_target(ctx, study, series, instance))


def _admin_facility(ctx: WebContext, action: str, study: str) -> int:
    if not ctx.principal.can_delete:
        ctx.record(action, "denied", study=study, reason=f"role {ctx.principal.role}")
        raise HTTPException(403, detail="only administrators may manage legal holds")
    return locate(ctx, action, study)[0].facility_id


def _actor(ctx: WebContext) -> Actor:
    return Actor(ctx.principal.subject, actor_type(ctx.principal), ctx.client)


def _hold_out(hold: Hold) -> HoldOut:
    return HoldOut(
        study_instance_uid=hold.study_instance_uid,
        facility=hold.facility,
        reason=hold.reason,
        placed_by=hold.placed_by,
        placed_at=hold.placed_at,
    )


@router.get("/studies/{study}/hold")
def read_hold(study: str, ctx: ContextDep) -> HoldOut:
    facility_id = _admin_facility(ctx, "legal-hold", study)
    hold = get_hold(ctx.runtime, facility_id, study)
    if hold is None:
        raise HTTPException(404, detail=f"study {study} is not on legal hold")
    return _hold_out(hold)


@router.put("/studies/{study}/hold")
def put_hold(study: str, body: HoldIn, ctx: ContextDep) -> HoldOut:
    facility_id = _admin_facility(ctx, "legal-hold", study)
    try:
        return _hold_out(place_hold(ctx.runtime, facility_id, study, body.reason, _actor(ctx)))
    except ValueError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    except HoldError as exc:
        raise HTTPException(404, detail=str(exc)) from exc


@router.delete("/studies/{study}/hold", status_code=204)
def delete_hold(study: str, ctx: ContextDep) -> Response:
    facility_id = _admin_facility(ctx, "legal-hold", study)
    try:
        clear_hold(ctx.runtime, facility_id, study, _actor(ctx))
    except HoldError as exc:
        raise HTTPException(404, detail=str(exc)) from exc
    return Response(status_code=204)


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


RuntimeDep = Annotated[Runtime, Depends(_runtime)]


@router.get("/consistency")
def consistency(
    _admin: AdminDep,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=0, le=1000)] = 100,
) -> ConsistencyOut:
    """What the last consistency checks found, and the deletion sweep's backlog."""
    counts = finding_counts(runtime)
    by_kind: dict[str, dict[str, int]] = {ORPHAN: {}, MISSING: {}}
    for (kind, state), count in counts.by_kind_and_state.items():
        by_kind.setdefault(kind, {})[state] = count

    def listed(kind: str) -> list[FindingOut]:
        return [
            FindingOut(
                object_key=f.object_key,
                facility_id=f.facility_id,
                size_bytes=f.size_bytes,
                found_at=f.found_at,
                state=f.state,
            )
            for f in open_findings(runtime, kind, limit)
        ]

    return ConsistencyOut(
        counts=by_kind,
        tombstones_pending=counts.tombstones_pending,
        tombstones_failing=counts.tombstones_failing,
        missing=listed(MISSING),
        orphans=listed(ORPHAN),
    )


@router.post("/consistency/check")
def run_check(_admin: AdminDep, runtime: RuntimeDep) -> CheckOut:
    """Run the consistency check now (and repair per the documented policy)."""
    report = check_consistency(runtime)
    return CheckOut(
        skipped=report.skipped,
        checked_objects=report.checked_objects,
        checked_rows=report.checked_rows,
        orphans_removed=report.orphans_removed,
        orphans_within_grace=report.orphans_young,
        missing=report.missing,
    )
