"""Routing in the index, on SQLite, PostgreSQL and PostgreSQL + S3: which instances a route
matches (index columns, headers read from the store), one transfer per instance and
destination however often a study is routed, claims that two workers never share, backoff,
dead letters and their retry, and a route refused with the reason when its facility or a
destination is not registered."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from noctis.core import transfers
from noctis.core.routing import RouteRefused, apply_route, route_study
from noctis.core.runtime import Runtime
from noctis.index.migrate import current_revision, upgrade
from noctis.index.models import utcnow
from noctis.index.routing import Transfer
from noctis.specs.route import RouteSpec
from support.archive import register_facility
from support.incoming import ingest_file

STUDY = "1.2.826.0.1.3680043.8.498.1"
DicomFactory = Callable[..., Path]  # the make_dicom fixture (tests/core/conftest.py)


def _route(runtime: Runtime, name: str, **spec: object) -> None:
    with runtime.sessions.begin() as session:
        apply_route(session, name, RouteSpec.model_validate(spec))


def _facility(runtime: Runtime) -> object:
    return register_facility(
        runtime,
        "east",
        [
            {"aeTitle": "MODALITY"},
            {"aeTitle": "A", "host": "127.0.0.1", "port": 11001},
            {"aeTitle": "B", "host": "127.0.0.1", "port": 11002},
        ],
    )


def _transfers(runtime: Runtime) -> list[tuple[str, str, str]]:
    with runtime.sessions() as session:
        rows = session.execute(
            select(Transfer.destination, Transfer.sop_instance_uid, Transfer.state)
        ).all()
    return sorted((d, u, s) for d, u, s in rows)


def test_a_route_matches_on_index_columns_and_on_headers_once_per_instance(
    runtime: Runtime, make_dicom: DicomFactory
) -> None:
    facility = _facility(runtime)
    wanted = [
        make_dicom(
            StudyInstanceUID=STUDY, SOPInstanceUID=f"{STUDY}.1.{n}", InstitutionName="St Mary"
        )
        for n in range(3)
    ]
    others = [
        make_dicom(StudyInstanceUID=STUDY, SOPInstanceUID=f"{STUDY}.2.1", InstitutionName="Other"),
        make_dicom(StudyInstanceUID=STUDY, SOPInstanceUID=f"{STUDY}.2.2", Modality="MR",
                   InstitutionName="St Mary"),
    ]  # fmt: skip
    for path in wanted + others:
        ingest_file(runtime, facility, path)  # type: ignore[arg-type]
    _route(
        runtime,
        "ct-of-st-mary",
        facility="east",
        destinations=["A", "B"],
        match={"modalities": ["C?"], "attributes": {"(0008,0080)": "St M*", "PatientID": "P00*"}},
    )
    assert route_study(runtime, "east", STUDY) == {"A": 3, "B": 3}
    assert route_study(runtime, "east", STUDY) == {}  # stable again: nothing new
    uids = sorted(f"{STUDY}.1.{n}" for n in range(3))
    assert _transfers(runtime) == sorted((ae, uid, "pending") for ae in ("A", "B") for uid in uids)


def test_two_workers_never_claim_the_same_transfer_and_failures_back_off(
    runtime: Runtime, make_dicom: DicomFactory
) -> None:
    facility = _facility(runtime)
    for _ in range(40):
        ingest_file(runtime, facility, make_dicom(StudyInstanceUID=STUDY))  # type: ignore[arg-type]
    retry = {"attempts": 2, "initialDelaySeconds": 30, "maxDelaySeconds": 60}
    _route(runtime, "all", facility="east", destinations=["A"], retry=retry)
    assert route_study(runtime, "east", STUDY) == {"A": 40}

    claims: list[transfers.Claim] = []
    lock = threading.Lock()

    def take() -> None:
        while True:
            claim = transfers.claim(runtime, "A", 7, lease=60)
            if not claim.transfers:
                return
            with lock:
                claims.append(claim)

    workers = [threading.Thread(target=take) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    claimed = [t.id for claim in claims for t in claim.transfers]
    assert len(claimed) == len(set(claimed)) == 40
    assert all(t.object_key for claim in claims for t in claim.transfers)

    first, *rest = claims
    transfers.finish(
        runtime,
        first,
        [transfers.Outcome(t, False, "C-STORE status 0xA700") for t in first.transfers],
    )
    for claim in rest:
        transfers.finish(runtime, claim, [transfers.Outcome(t, True) for t in claim.transfers])
    failed = {t.id for t in first.transfers}
    with runtime.sessions() as session:
        rows = {row.id: row for row in session.scalars(select(Transfer))}
    assert {i for i, r in rows.items() if r.state == "failed"} == failed
    assert all(rows[i].next_attempt_at.replace(tzinfo=None) > utcnow().replace(tzinfo=None)
               + timedelta(seconds=25) for i in failed)  # fmt: skip
    assert transfers.claim(runtime, "A", 50, lease=60).transfers == []  # not due yet

    # Due now: the second failure is the last attempt, so they are dead letters.
    with runtime.sessions.begin() as session:
        session.execute(update(Transfer).values(next_attempt_at=utcnow()))
    again = transfers.claim(runtime, "A", 50, lease=60)
    assert {t.id for t in again.transfers} == failed
    transfers.finish(
        runtime, again, [transfers.Outcome(t, False, "refused") for t in again.transfers]
    )
    with runtime.sessions.begin() as session:
        assert transfers.retry_dead(session, facility="east") == {"A": len(failed)}
    retried = transfers.claim(runtime, "A", 50, lease=60)
    assert {t.id for t in retried.transfers} == failed
    assert {t.attempts for t in retried.transfers} == {1}


def test_a_claim_held_past_its_lease_is_taken_back_and_counted(
    runtime: Runtime, make_dicom: DicomFactory
) -> None:
    facility = _facility(runtime)
    for _ in range(3):
        ingest_file(runtime, facility, make_dicom(StudyInstanceUID=STUDY))  # type: ignore[arg-type]
    _route(runtime, "all", facility="east", destinations=["A"])
    route_study(runtime, "east", STUDY)
    lost = transfers.claim(runtime, "A", 10, lease=0.01)  # its worker dies
    assert len(lost.transfers) == 3
    assert transfers.due_destinations(runtime) == []
    threading.Event().wait(0.05)
    assert transfers.take_back_stale(runtime) == 3
    assert transfers.due_destinations(runtime) == ["A"]
    second = transfers.claim(runtime, "A", 10, lease=60)
    assert {t.attempts for t in second.transfers} == {2}  # the lost attempt is counted
    # The dead worker's late report changes nothing: the claim is no longer its own.
    transfers.finish(runtime, lost, [transfers.Outcome(t, True) for t in lost.transfers])
    assert {state for _, _, state in _transfers(runtime)} == {"sending"}


def test_a_route_to_an_unregistered_facility_or_destination_is_refused(runtime: Runtime) -> None:
    _facility(runtime)
    with pytest.raises(RouteRefused) as refused:
        _route(runtime, "r", facility="west", destinations=["A"])
    assert refused.value.reason == "UnknownFacility"
    with pytest.raises(RouteRefused) as refused:
        _route(runtime, "r", facility="east", destinations=["A", "NOPE"])
    assert refused.value.reason == "UnknownDestination"
    assert "NOPE" in str(refused.value)
    with pytest.raises(RouteRefused) as refused:
        _route(runtime, "r", facility="east", destinations=["MODALITY"])  # no host and port
    assert refused.value.reason == "UnknownDestination"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_routing_migration_goes_down_and_up(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from alembic import command

    from noctis.index.migrate import alembic_config

    url = (
        request.getfixturevalue("pg_url")
        if backend == "postgres"
        else f"sqlite:///{tmp_path / 'index.sqlite3'}"
    )
    upgrade(url, "0009")
    assert current_revision(url) == "0009"
    command.downgrade(alembic_config(url), "0008")
    from sqlalchemy import create_engine

    engine = create_engine(url)
    with engine.connect() as conn:
        conn.execute(text("SELECT count(*) FROM facility"))
        with pytest.raises(Exception, match="route"):
            conn.execute(text("SELECT count(*) FROM route_transfer"))
    engine.dispose()
    upgrade(url, "0009")
    assert current_revision(url) == "0009"


def test_a_per_instance_route_takes_each_new_instance_once_and_waits_for_its_sender(
    runtime: Runtime, make_dicom: DicomFactory
) -> None:
    from noctis.core.audit import AuditAction, AuditEvent, AuditOutcome
    from noctis.core.route_matching import SETTLE_SECONDS
    from noctis.core.routing import scan_new_instances

    facility = _facility(runtime)
    ingest_file(runtime, facility, make_dicom())  # type: ignore[arg-type]  # before the routes
    _route(runtime, "each", facility="east", destinations=["A"], trigger="instance")
    _route(
        runtime,
        "from-ct1",
        facility="east",
        destinations=["B"],
        trigger="instance",
        match={"callingAETitles": ["CT1"]},
    )
    for _ in range(3):
        ingest_file(runtime, facility, make_dicom(StudyInstanceUID=STUDY))  # type: ignore[arg-type]
    threading.Event().wait(SETTLE_SECONDS + 0.1)
    # The store of STUDY is not audited yet (its association is open): "from-ct1" waits.
    assert scan_new_instances(runtime) == {"A": 3}
    assert scan_new_instances(runtime) == {}
    runtime.audit.record_durably(
        AuditEvent(
            action=AuditAction.STORE,
            outcome=AuditOutcome.SUCCESS,
            actor="CT1",
            actor_type="ae",
            client="127.0.0.1",
            study_instance_uid=STUDY,
            facility_id=facility.id,  # type: ignore[attr-defined]
        )
    )
    assert scan_new_instances(runtime) == {"B": 3}
    assert scan_new_instances(runtime) == {}
    assert len(_transfers(runtime)) == 6
