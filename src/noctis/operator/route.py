"""Route: a routing rule written into the index, with its progress in the status.

The rule is refused (Ready=False: UnknownFacility or UnknownDestination, an Event, retried)
while its facility or a destination is not registered; the entry is left as it was then.
The counts come from the index on a timer (one GROUP BY over the route's transfers).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from noctis.core.routing import RouteRefused, apply_route, delete_route, find_route
from noctis.core.routing_status import route_reports
from noctis.index.db import transaction
from noctis.index.models import Facility
from noctis.index.routing import RouteRow
from noctis.operator.conditions import READY, SYNCED, Cond, now
from noctis.operator.context import Operator
from noctis.operator.errors import Blocked, parse_spec
from noctis.operator.kinds import ROUTES
from noctis.specs.route import RouteSpec


def reconcile(op: Operator, body: dict[str, Any], *, apply_always: bool) -> None:
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    spec = parse_spec(RouteSpec, body.get("spec"))
    wanted = spec.model_dump(mode="json", by_alias=True)
    try:
        with transaction(op.index_sessions()) as session:
            moved = forget_elsewhere(session, name, namespace, spec.facility)
            row = find_route(session, spec.facility, name)
            synced = (
                not moved and row is not None and row.namespace == namespace and row.spec == wanted
            )
            if apply_always or not synced:
                apply_route(session, name, spec, namespace=namespace)
            reports = [
                r for r in route_reports(session, facilities={spec.facility}) if r["name"] == name
            ]
    except RouteRefused as exc:
        raise Blocked(exc.reason, str(exc)) from exc
    except IntegrityError as exc:
        raise Blocked("Conflict", f"the index changed meanwhile: {exc.orig}", delay=2) from exc
    except SQLAlchemyError as exc:
        raise Blocked("IndexUnavailable", f"index database: {type(exc).__name__}: {exc}") from exc
    report = reports[0]
    totals = report["totals"]
    conditions = [
        Cond(SYNCED, True, "Applied", "the routing rule in the index matches the spec"),
        Cond(
            READY,
            True,
            "Routing" if spec.enabled else "Disabled",
            f"forwarding {spec.trigger.value} to {', '.join(spec.destinations)}"
            if spec.enabled
            else "the route is disabled: nothing new is forwarded",
        ),
    ]
    fields = {
        **totals,
        "destinations": report["destinations"],
        "progressUpdated": now(),
    }
    op.write_status(ROUTES, body, fields, conditions)


def forget_elsewhere(session: Session, name: str, namespace: str, facility: str) -> int:
    """A Route whose spec moved it to another facility leaves its old entry: removed."""
    rows = session.scalars(
        select(RouteRow)
        .join(Facility, Facility.id == RouteRow.facility_id)
        .where(RouteRow.name == name, RouteRow.namespace == namespace, Facility.name != facility)
    ).all()
    for row in rows:
        session.delete(row)
    return len(rows)


def remove(op: Operator, body: dict[str, Any]) -> None:
    """The Route is being deleted: its rule and its transfers go (what was sent stays)."""
    meta = body["metadata"]
    facility = (body.get("spec") or {}).get("facility", "")
    try:
        with transaction(op.index_sessions()) as session:
            row = find_route(session, facility, meta["name"])
            found = row is not None and row.namespace in (None, meta["namespace"])
            if found:
                delete_route(session, facility, meta["name"])
    except SQLAlchemyError as exc:
        raise Blocked("IndexUnavailable", f"index database: {type(exc).__name__}: {exc}") from exc
    if found:
        op.events(body, "Normal", "Removed", f"route {meta['name']} removed from the index")
