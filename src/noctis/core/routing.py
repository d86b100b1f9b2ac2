"""Routing rules: which instances go to which registered AEs, and the transfers that say so.

A route (``noctis.specs.route``) names a facility, a match and destinations: AEs of that
facility's registry with a host and port (a route never sends one facility's studies to
another facility's peers). ``noctis route apply`` and the operator write routes here.

Matching an instance creates one transfer row per destination (``noctis.index.routing``),
``INSERT ... ON CONFLICT DO NOTHING`` on (route, destination, instance): a study that becomes
stable twice, or a scan that looks at an instance again, never makes a second transfer.
The transfers are then sent by the worker (``noctis.core.transfers`` claims them).

Criteria are checked against the index where it has the attribute (Modality, the study's
attributes), the audit trail for the calling AE (stores are audited per association and study,
so ``callingAETitles`` holds when any AE matching it sent instances of the study), and the
stored header for any other attribute (read up to the pixel data, only for routes that ask).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from noctis.core.audit import AuditAction
from noctis.core.runtime import Runtime
from noctis.dicom.header import read_header
from noctis.index.accounts import AuditRow
from noctis.index.models import ApplicationEntity, Facility, Instance, Series, Study, utcnow
from noctis.index.routing import RouteRow, Transfer, TransferState
from noctis.specs.route import RouteMatch, RouteSpec, RouteTrigger

log = logging.getLogger(__name__)

SETTLE_SECONDS = 0.5
# A per-instance route on the calling AE waits for the store's audit event (written when the
# association ends) at most this long; after that the instance is judged without it.
SENDER_WAIT_SECONDS = 600.0

# Attributes the index holds, so matching them reads no header.
_INDEXED = {
    0x00080060: Series.modality,
    0x0008103E: Series.series_description,
    0x00180015: Series.body_part_examined,
    0x00200011: Series.series_number,
    0x00080016: Instance.sop_class_uid,
    0x00100020: Study.patient_id,
    0x00100010: Study.patient_name,
    0x00080050: Study.accession_number,
    0x00081030: Study.study_description,
    0x00080020: Study.study_date,
    0x00080090: Study.referring_physician_name,
    0x0020000D: Study.study_instance_uid,
}


class RouteRefused(ValueError):
    """The route cannot be applied as it stands (unknown facility or destination)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # a condition reason: UnknownFacility, UnknownDestination


@dataclass(frozen=True)
class Candidate:
    """An instance a route may forward, with what the index knows of it."""

    instance_id: int
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    object_key: str
    pixel_data_offset: int | None
    created_at: datetime
    indexed: dict[int, str]


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


# --- matching ---------------------------------------------------------------------------


def _candidates(query: Select[Any]) -> Select[Any]:
    return query.add_columns(*_INDEXED.values())


def _base_query() -> Select[Any]:
    return _candidates(
        select(
            Instance.id,
            Study.study_instance_uid,
            Series.series_instance_uid,
            Instance.sop_instance_uid,
            Instance.object_key,
            Instance.pixel_data_offset,
            Instance.created_at,
        )
        .join(Series, Series.id == Instance.series_pk)
        .join(Study, Study.id == Series.study_pk)
    )


def _candidate(row: Sequence[Any]) -> Candidate:
    values = row[7:]
    indexed = {
        tag: "" if value is None else str(value)
        for tag, value in zip(_INDEXED, values, strict=True)
    }
    return Candidate(row[0], row[1], row[2], row[3], row[4], row[5], row[6], indexed)


def study_candidates(session: Session, facility_id: int, study_uid: str) -> list[Candidate]:
    query = _base_query().where(
        Study.facility_id == facility_id, Study.study_instance_uid == study_uid
    )
    return [_candidate(row) for row in session.execute(query.order_by(Instance.id))]


def new_candidates(session: Session, facility_id: int, after: int, limit: int) -> list[Candidate]:
    """Instances stored after instance ``after``, oldest first. Only those stored SETTLE
    seconds ago or more: on PostgreSQL a transaction that took a lower id may commit after one
    that took a higher id, and a scan must not move past an instance it has not seen yet."""
    settled = utcnow() - timedelta(seconds=SETTLE_SECONDS)
    query = _base_query().where(
        Instance.facility_id == facility_id, Instance.id > after, Instance.created_at <= settled
    )
    return [_candidate(row) for row in session.execute(query.order_by(Instance.id).limit(limit))]


def _matches_any(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(value.strip(), pattern.strip()) for pattern in patterns)


def _calling_aes(session: Session, facility_id: int, study_uid: str) -> set[str]:
    return set(
        session.scalars(
            select(AuditRow.actor)
            .distinct()
            .where(
                AuditRow.facility_id == facility_id,
                AuditRow.study_instance_uid == study_uid,
                AuditRow.action == AuditAction.STORE.value,
                AuditRow.actor_type == "ae",
            )
        )
    )


class Matcher:
    """One route's match, applied to the candidates of one facility (caching per study)."""

    def __init__(self, runtime: Runtime, session: Session, facility_id: int, match: RouteMatch):
        self.runtime = runtime
        self.session = session
        self.facility_id = facility_id
        self.match = match
        self.patterns = match.attribute_patterns()
        self._senders: dict[str, set[str]] = {}

    def undecided(self, candidate: Candidate) -> bool:
        """The calling AE is asked for and the store of this study has not been audited yet
        (its association is still open)."""
        if not self.match.calling_ae_titles:
            return False
        return not self._senders_of(candidate.study_instance_uid)

    def _senders_of(self, study: str) -> set[str]:
        if study not in self._senders:
            self._senders[study] = _calling_aes(self.session, self.facility_id, study)
        return self._senders[study]

    def __call__(self, candidate: Candidate) -> bool:
        match = self.match
        if match.modalities and not _matches_any(candidate.indexed[0x00080060], match.modalities):
            return False
        if match.calling_ae_titles:
            senders = self._senders_of(candidate.study_instance_uid)
            if not any(_matches_any(ae, match.calling_ae_titles) for ae in senders):
                return False
        unindexed = {t: p for t, p in self.patterns.items() if t not in candidate.indexed}
        for tag, patterns in self.patterns.items():
            if tag in candidate.indexed and not _matches_any(candidate.indexed[tag], patterns):
                return False
        if unindexed:
            header = self._header(candidate)
            for tag, patterns in unindexed.items():
                element = header.get(tag) if header is not None else None
                value = "" if element is None or element.value is None else str(element.value)
                if not _matches_any(value, patterns):
                    return False
        return True

    def _header(self, candidate: Candidate) -> Any:
        store = self.runtime.store
        try:
            if candidate.pixel_data_offset:
                data = store.get_range(candidate.object_key, 0, candidate.pixel_data_offset)
            else:
                data = store.get(candidate.object_key)
            return read_header(io.BytesIO(data))[0]
        except Exception:
            log.warning(
                "route: cannot read the header of %s; it does not match",
                candidate.sop_instance_uid,
                exc_info=True,
            )
            return None


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
            candidates = _decided(
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


def _decided(matcher: Matcher, candidates: list[Candidate]) -> list[Candidate]:
    """The candidates up to the first one whose sender is not known yet (the scan resumes
    there at its next tick), unless that one has waited SENDER_WAIT_SECONDS already."""
    patience = datetime.now(UTC) - timedelta(seconds=SENDER_WAIT_SECONDS)
    for index, candidate in enumerate(candidates):
        created = candidate.created_at
        if created.tzinfo is None:  # SQLite hands back naive UTC
            created = created.replace(tzinfo=UTC)
        if created > patience and matcher.undecided(candidate):
            return candidates[:index]
    return candidates
