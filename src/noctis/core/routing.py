"""Routing rules: which instances go to which registered AEs, and the transfers that say so.

A route (``noctis.specs.route``) names a facility, a match and destinations: AEs of that
facility's registry with a host and port (a route never sends one facility's studies to
another facility's peers). ``noctis route apply`` and the operator write routes here.

Matching an instance creates one transfer row per destination (``noctis.index.routing``),
``INSERT ... ON CONFLICT DO NOTHING`` on (route, destination, instance): a study that becomes
stable twice, or a scan that looks at an instance again, never makes a second transfer.
The transfers are then sent by the worker (``noctis.core.transfers`` claims them). What a
route matches is ``noctis.core.route_matching``'s.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from noctis.core.route_matching import (
    Candidate,
    Matcher,
    decided,
    new_candidates,
    study_candidates,
)
from noctis.core.runtime import Runtime
from noctis.index.models import ApplicationEntity, Facility, Instance
from noctis.index.routing import RouteRow, Transfer, TransferState
from noctis.specs.route import RouteSpec, RouteTrigger


class RouteRefused(ValueError):
    """The route cannot be applied as it stands (unknown facility or destination)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # a condition reason: UnknownFacility, UnknownDestination


def apply_route(
    session: Session, name: str, spec: RouteSpec, *, namespace: str | None = None
) -> RouteRow:
    """Create or update a route to match the spec; RouteRefused if its facility or a
    destination is not registered (nothing changed then)."""
    facility = session.scalar(select(Facility).where(Facility.name == spec.facility))
    if facility is None or not facility.enabled:
        raise RouteRefused("UnknownFacility", f"facility {spec.facility} is not registered")
    if namespace is not None and facility.namespace not in (None, namespace):
        raise RouteRefused(
            "UnknownFacility",
            f"facility {spec.facility} belongs to namespace {facility.namespace}, not {namespace}",
        )
    registered = {
        ae.ae_title: ae
        for ae in session.scalars(
            select(ApplicationEntity).where(ApplicationEntity.facility_id == facility.id)
        )
    }
    missing = [d for d in spec.destinations if d not in registered]
    if missing:
        raise RouteRefused(
            "UnknownDestination",
            f"not AEs of facility {spec.facility}: {', '.join(missing)} (register them in the "
            "Facility's applicationEntities, with host and port)",
        )
    unreachable = [d for d in spec.destinations if not registered[d].host or not registered[d].port]
    if unreachable:
        raise RouteRefused(
            "UnknownDestination",
            f"AEs without host and port in facility {spec.facility}: {', '.join(unreachable)}",
        )
    route = session.scalar(
        select(RouteRow).where(RouteRow.facility_id == facility.id, RouteRow.name == name)
    )
    if route is None:
        route = RouteRow(facility_id=facility.id, name=name, scanned_to=_newest_instance(session))
        session.add(route)
    if namespace is not None:
        route.namespace = namespace
    route.trigger = spec.trigger.value
    route.enabled = spec.enabled
    route.destinations = list(spec.destinations)
    route.spec = spec.model_dump(mode="json", by_alias=True)
    route.retry_attempts = spec.retry.attempts
    route.retry_initial_seconds = spec.retry.initial_delay_seconds
    route.retry_max_seconds = spec.retry.max_delay_seconds
    session.flush()
    return route


def delete_route(session: Session, facility: str, name: str) -> bool:
    """Remove a route and its transfers; False if there was none."""
    route = find_route(session, facility, name)
    if route is None:
        return False
    session.delete(route)
    session.flush()
    return True


def find_route(session: Session, facility: str, name: str) -> RouteRow | None:
    return session.scalar(
        select(RouteRow)
        .join(Facility, Facility.id == RouteRow.facility_id)
        .where(Facility.name == facility, RouteRow.name == name)
    )


def list_routes(session: Session) -> list[tuple[RouteRow, str]]:
    """Every route with its facility's name."""
    rows = session.execute(
        select(RouteRow, Facility.name)
        .join(Facility, Facility.id == RouteRow.facility_id)
        .order_by(Facility.name, RouteRow.name)
    ).all()
    return [(route, facility) for route, facility in rows]


def _newest_instance(session: Session) -> int:
    """A new per-instance route forwards what arrives from now on, not the archive's past."""
    return int(session.scalar(select(Instance.id).order_by(Instance.id.desc()).limit(1)) or 0)


def create_transfers(
    session: Session, route: RouteRow, candidates: Iterable[Candidate]
) -> dict[str, int]:
    """A pending transfer per (candidate, destination) the route has none of; how many were
    created per destination."""
    rows = [
        {
            "route_id": route.id,
            "facility_id": route.facility_id,
            "destination": destination,
            "study_instance_uid": c.study_instance_uid,
            "series_instance_uid": c.series_instance_uid,
            "sop_instance_uid": c.sop_instance_uid,
            "state": TransferState.PENDING.value,
            "attempts": 0,
            "last_error": "",
        }
        for c in candidates
        for destination in route.destinations
    ]
    if not rows:
        return {}
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    created: dict[str, int] = {}
    for start in range(0, len(rows), 500):
        chunk = rows[start : start + 500]
        statement = (
            dialect.insert(Transfer)
            .values(chunk)
            .on_conflict_do_nothing(index_elements=["route_id", "destination", "sop_instance_uid"])
            .returning(Transfer.destination)
        )
        for destination in session.scalars(statement):
            created[destination] = created.get(destination, 0) + 1
    return created


def route_study(
    runtime: Runtime, facility: str, study_uid: str, sop_instance_uid: str | None = None
) -> dict[str, int]:
    """Create the transfers of one stable study (or one instance of it) for every enabled
    stable-trigger route of its facility; new transfers per destination."""
    created: dict[str, int] = {}
    with runtime.sessions.begin() as session:
        facility_id = session.scalar(select(Facility.id).where(Facility.name == facility))
        if facility_id is None:
            return created
        routes = session.scalars(
            select(RouteRow).where(
                RouteRow.facility_id == facility_id,
                RouteRow.enabled.is_(True),
                RouteRow.trigger == RouteTrigger.STABLE.value,
            )
        ).all()
        if not routes:
            return created
        candidates = study_candidates(session, facility_id, study_uid)
        if sop_instance_uid:
            candidates = [c for c in candidates if c.sop_instance_uid == sop_instance_uid]
        for route in routes:
            matcher = Matcher(
                runtime, session, facility_id, RouteSpec.model_validate(route.spec).match
            )
            for destination, count in create_transfers(
                session, route, [c for c in candidates if matcher(c)]
            ).items():
                created[destination] = created.get(destination, 0) + count
    return created


def scan_new_instances(runtime: Runtime, limit: int = 2000) -> dict[str, int]:
    """Per-instance routes: create the transfers of instances stored since each route last
    looked. Each route's progress (``scanned_to``) moves by a conditional UPDATE, so of
    several workers scanning at once only one creates a batch's transfers (and the unique
    key covers the rest)."""
    created: dict[str, int] = {}
    with runtime.sessions() as session:
        routes = session.execute(
            select(RouteRow.id, RouteRow.scanned_to).where(
                RouteRow.enabled.is_(True), RouteRow.trigger == RouteTrigger.INSTANCE.value
            )
        ).all()
    for route_id, scanned_to in routes:
        with runtime.sessions.begin() as session:
            route = session.get(RouteRow, route_id)
            if route is None:
                continue
            matcher = Matcher(
                runtime, session, route.facility_id, RouteSpec.model_validate(route.spec).match
            )
            candidates = decided(
                matcher, new_candidates(session, route.facility_id, scanned_to, limit)
            )
            if not candidates:
                continue
            moved = session.execute(
                update(RouteRow)
                .where(RouteRow.id == route_id, RouteRow.scanned_to == scanned_to)
                .values(scanned_to=candidates[-1].instance_id)
            ).rowcount
            if not moved:
                continue  # another worker took this batch
            for destination, count in create_transfers(
                session, route, [c for c in candidates if matcher(c)]
            ).items():
                created[destination] = created.get(destination, 0) + count
    return created
