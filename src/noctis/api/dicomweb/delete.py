"""DELETE of a study, series or instance (as dcm4chee and Google's DICOM store offer).

Administrators only (``noctis.core.roles.DELETE_ROLES``), within the facilities they see (a
UID that several hold needs ``?facility=NAME``, as retrieval does). The index rows go at once
and the objects are swept after the answer (``noctis.core.deletion``): 204 No Content; 404
for what is not (or no longer) there, so a second DELETE answers 404; 409 when a legal hold
or the storage pool's object lock protects it, with nothing changed.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response

from noctis.api.audit import actor_type
from noctis.api.dicomweb.access import locate
from noctis.api.dicomweb.context import PREFIX, ContextDep, WebContext, not_found
from noctis.core.deletion import (
    Actor,
    Deleted,
    DeletionRefused,
    NothingToDelete,
    Target,
    delete,
)

router = APIRouter(prefix=PREFIX, tags=["DELETE"])


@router.delete("/studies/{study}", status_code=204)
def delete_study(study: str, ctx: ContextDep) -> Response:
    delete_target(ctx, study)
    return Response(status_code=204)


@router.delete("/studies/{study}/series/{series}", status_code=204)
def delete_series(study: str, series: str, ctx: ContextDep) -> Response:
    delete_target(ctx, study, series)
    return Response(status_code=204)


@router.delete("/studies/{study}/series/{series}/instances/{instance}", status_code=204)
def delete_instance(study: str, series: str, instance: str, ctx: ContextDep) -> Response:
    delete_target(ctx, study, series, instance)
    return Response(status_code=204)


def delete_target(
    ctx: WebContext, study: str, series: str | None = None, sop: str | None = None
) -> Deleted:
    """Delete what the path names for the caller (the REST API's DELETE too), or raise the
    HTTP error: 403 (role), 404, 409 (several facilities, legal hold, object lock)."""
    if not ctx.principal.can_delete:
        ctx.record(
            "delete", "denied", study=study, reason=f"role {ctx.principal.role} may not delete"
        )
        raise HTTPException(403, detail="only administrators may delete studies")
    found = locate(ctx, "delete", study, series, sop)
    target = Target(found[0].facility_id, study, series, sop)
    actor = Actor(ctx.principal.subject, actor_type(ctx.principal), ctx.client)
    try:
        return delete(ctx.runtime, target, actor)
    except NothingToDelete as exc:  # deleted by someone else since the look-up
        raise not_found(target.level.capitalize()) from exc
    except DeletionRefused as exc:
        raise HTTPException(409, detail=str(exc)) from exc
