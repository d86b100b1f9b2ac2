"""Routing progress and dead letters over REST (``/api/routes``).

Anyone may read the routes of the facilities they may see (counts, AE titles and DIMSE
statuses: no patient data); only administrators send dead letters again, and that is audited.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy import select

from noctis.api.auth.context import AuthContextDep
from noctis.api.rest.deps import AdminAuditDep, AdminDep, SessionDep
from noctis.api.security import Principal, PrincipalDep
from noctis.core.queue import FORWARD_TO_DESTINATION, destination_queue
from noctis.core.routing import find_route
from noctis.core.routing_status import route_reports
from noctis.core.transfers import retry_dead
from noctis.index.models import Facility

router = APIRouter(tags=["routing"])


def _visible(session: SessionDep, principal: Principal) -> set[str] | None:
    if principal.facility_ids is None:
        return None
    return set(
        session.scalars(select(Facility.name).where(Facility.id.in_(principal.facility_ids)))
    )


@router.get("/routes")
def list_routes(principal: PrincipalDep, session: SessionDep) -> list[dict[str, Any]]:
    """Every route (of the facilities the caller may see) with its progress per destination:
    transfers pending, sent, failed (to be tried again) and dead, and the latest error."""
    return route_reports(session, facilities=_visible(session, principal))


@router.get("/routes/{facility}/{name}")
def get_route(
    facility: str, name: str, principal: PrincipalDep, session: SessionDep
) -> dict[str, Any]:
    visible = _visible(session, principal)
    if visible is None or facility in visible:
        for report in route_reports(session, facilities={facility}):
            if report["name"] == name:
                return report
    raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no route {name!r} in {facility!r}")


@router.post("/routes/{facility}/{name}/retry")
def retry_route(
    facility: str,
    name: str,
    _: AdminDep,
    session: SessionDep,
    audit: AdminAuditDep,
    context: AuthContextDep,
    destination: Annotated[str | None, Query(description="only this destination's")] = None,
) -> dict[str, Any]:
    """Send the route's dead letters again, with a fresh count of attempts."""
    if find_route(session, facility, name) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no route {name!r} in {facility!r}")
    counts = retry_dead(session, facility=facility, route=name, destination=destination)
    audit("route.retry", f"{facility}/{name}", destinations=counts)
    session.commit()  # pending again before a worker is asked to send them
    for ae in counts:
        context.runtime.queue.send(
            FORWARD_TO_DESTINATION, queue=destination_queue(ae), destination=ae
        )
    return {"retried": sum(counts.values()), "destinations": counts}
