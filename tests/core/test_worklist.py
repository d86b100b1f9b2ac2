"""The reading worklist on each index backend: studies arrive on it by the periodic scan,
become ready when stable, and are listed in the worklist's order with its filters and
keyset pages; notes are kept and audited."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from noctis.core.facilities import ensure_default_facility
from noctis.core.ingest import FacilityRef
from noctis.core.queue import NullQueue
from noctis.core.runtime import Runtime
from noctis.core.workflow import Actor, Priority, StudyState, advance, assign, set_priority
from noctis.core.worklist import ArrivalScan, WorklistRefused, add_note
from noctis.index.accounts import AuditRow
from noctis.index.migrate import upgrade
from noctis.index.models import Study
from noctis.index.workflow import StudyWorkflow
from noctis.index.worklist import WorklistQuery, notes_of, worklist_page
from noctis.settings import Settings
from noctis.worker.arrival import scan_arrivals
from noctis.worker.stable import study_stable
from support.incoming import ingest_file

ALICE = Actor("alice", client="10.0.0.5")


@pytest.fixture(params=["sqlite", "postgres"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    """A migrated index on SQLite or PostgreSQL and a filesystem store."""
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    upgrade(url)
    runtime = Runtime.open(Settings(data_dir=tmp_path, database_url=url), queue=NullQueue())
    yield runtime
    runtime.close()


@pytest.fixture
def facility(runtime: Runtime) -> FacilityRef:
    with runtime.sessions.begin() as session:
        row = ensure_default_facility(session)
        return FacilityRef(row.id, row.name)


def _ingest(runtime: Runtime, facility: FacilityRef, make_dicom, **attributes: object) -> str:
    return ingest_file(runtime, facility, make_dicom(**attributes)).header.study_instance_uid


def _workflow(runtime: Runtime) -> dict[str, StudyWorkflow]:
    with runtime.sessions() as session:
        rows = session.execute(
            select(Study.study_instance_uid, StudyWorkflow).join(
                StudyWorkflow, StudyWorkflow.study_pk == Study.id
            )
        ).all()
        session.expunge_all()
    return {uid: row for uid, row in rows}


def _study(session, uid: str) -> Study:
    return session.scalars(select(Study).where(Study.study_instance_uid == uid)).one()


def test_new_studies_arrive_on_the_worklist_by_the_periodic_scan(
    runtime: Runtime, facility: FacilityRef, make_dicom
) -> None:
    first = _ingest(runtime, facility, make_dicom)
    second = _ingest(runtime, facility, make_dicom, Modality="MR")
    assert _workflow(runtime) == {}  # ingest writes none: the scan does
    assert scan_arrivals(runtime) == 2
    rows = _workflow(runtime)
    assert {uid: row.state for uid, row in rows.items()} == {first: "arrived", second: "arrived"}
    with runtime.sessions() as session:
        created = _study(session, first).created_at
    assert rows[first].arrived_at.replace(tzinfo=None) == created.replace(tzinfo=None)
    assert scan_arrivals(runtime) == 0  # idempotent
    third = _ingest(runtime, facility, make_dicom)
    assert scan_arrivals(runtime) == 1
    assert _workflow(runtime)[third].state == "arrived"


def test_the_scan_looks_below_its_watermark_until_it_has_settled(
    runtime: Runtime, facility: FacilityRef, make_dicom
) -> None:
    """A study whose key was drawn early but committed late (PostgreSQL's sequence) is still
    found while the watermark settles; once settled, a pass reads only newer keys."""
    early = _ingest(runtime, facility, make_dicom)
    _ingest(runtime, facility, make_dicom)

    def forget(uid: str) -> None:  # as if ``uid`` had committed after the last pass
        with runtime.sessions.begin() as session:
            session.execute(
                delete(StudyWorkflow).where(StudyWorkflow.study_pk == _study(session, uid).id)
            )

    unsettled = ArrivalScan(settle_seconds=3600)
    assert unsettled.run(runtime) == 2
    forget(early)
    assert unsettled.run(runtime) == 1
    assert unsettled.floor == 0

    settled = ArrivalScan(settle_seconds=0, trailing_keys=0)
    assert settled.run(runtime) == 0
    assert settled.floor > 0  # the highest key seen
    forget(early)
    assert settled.run(runtime) == 0  # below the watermark: not read again
    later = _ingest(runtime, facility, make_dicom)
    assert settled.run(runtime) == 1
    assert later in _workflow(runtime)
    # The periodic full pass finds what the watermark passed over.
    assert ArrivalScan(settle_seconds=0, trailing_keys=0, full_pass_seconds=0).run(runtime) == 1
    assert early in _workflow(runtime)


def test_a_key_sqlite_gives_again_after_a_deletion_is_still_an_arrival(
    runtime: Runtime, facility: FacilityRef, make_dicom
) -> None:
    """SQLite gives the deleted last study's key to the next study: the scan looks a
    little below its watermark, so the newcomer is not taken for one it has seen."""
    from noctis.core import deletion

    _ingest(runtime, facility, make_dicom)
    last = _ingest(runtime, facility, make_dicom)
    scan = ArrivalScan(settle_seconds=0)
    assert scan.run(runtime) == 2
    scan.run(runtime)  # the watermark is now the last study's key
    deletion.delete(
        runtime, deletion.Target(facility.id, last), deletion.Actor("admin", "user", "")
    )
    newcomer = _ingest(runtime, facility, make_dicom)
    assert scan.run(runtime) == 1
    assert _workflow(runtime)[newcomer].state == "arrived"


def test_a_stable_study_becomes_ready_and_a_claimed_one_stays_in_reading(
    runtime: Runtime, facility: FacilityRef, make_dicom
) -> None:
    waiting = _ingest(runtime, facility, make_dicom)
    claimed = _ingest(runtime, facility, make_dicom)
    scan_arrivals(runtime)
    with runtime.sessions.begin() as session:
        assign(session, _study(session, claimed), "alice", actor=ALICE, only_if_free=True)
    for uid in (waiting, claimed):
        assert study_stable(runtime, facility=facility.name, study_instance_uid=uid).startswith(
            "done"
        )
    rows = _workflow(runtime)
    assert (rows[waiting].state, rows[claimed].state) == ("ready", "in-reading")
    with runtime.sessions() as session:
        audited = session.execute(
            select(AuditRow.actor, AuditRow.detail).where(
                AuditRow.action == "workflow", AuditRow.study_instance_uid == waiting
            )
        ).all()
    assert audited == [
        ("noctis:stable", {"change": "state", "previous": "arrived", "state": "ready"})
    ]


def test_the_worklist_lists_stat_first_then_oldest_with_filters_and_keyset_pages(
    runtime: Runtime, facility: FacilityRef, make_dicom
) -> None:
    uids = [
        _ingest(runtime, facility, make_dicom, PatientName=f"Doe^P{n}", PatientID=f"ID{n}")
        for n in range(5)
    ]
    mr = _ingest(runtime, facility, make_dicom, Modality="MR", PatientName="Smith^Ann")
    scan_arrivals(runtime)
    base = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    with runtime.sessions.begin() as session:
        for n, uid in enumerate([*uids, mr]):
            study = _study(session, uid)
            session.execute(
                update(StudyWorkflow)
                .where(StudyWorkflow.study_pk == study.id)
                .values(arrived_at=base + timedelta(minutes=n))
            )
        set_priority(session, _study(session, uids[3]), Priority.STAT, actor=ALICE)
        set_priority(session, _study(session, uids[4]), Priority.URGENT, actor=ALICE)
        assign(session, _study(session, uids[1]), "alice", actor=ALICE)
    everyone = WorklistQuery(facility_ids=None)

    def listed(**changes: object) -> list[str]:
        query = WorklistQuery(**{**everyone.__dict__, **changes})
        with runtime.reader() as session:
            return [e.study_instance_uid for e in worklist_page(session, query)]

    order = [uids[3], uids[4], uids[0], uids[1], uids[2], mr]
    assert listed() == order
    assert listed(assignee="alice") == [uids[1]]
    assert listed(unassigned=True) == [u for u in order if u != uids[1]]
    assert listed(modalities=("MR",)) == [mr]
    assert listed(modalities=("CT", "MR")) == order
    assert listed(priorities=(int(Priority.STAT),)) == [uids[3]]
    assert listed(words=("smith",)) == [mr]
    assert listed(words=("doe", "id2")) == [uids[2]]
    assert listed(words=("50%",)) == []  # text, not a pattern
    assert listed(states=("in-reading",)) == [uids[1]]
    window = {
        "arrived_from": base + timedelta(minutes=2),
        "arrived_to": base + timedelta(minutes=4),
    }
    assert listed(**window) == [uids[3], uids[2]]
    assert listed(study_date_from="20240103") == []
    assert listed(study_date_to="20240102") == order
    assert listed(facility_ids=frozenset({facility.id + 1})) == []

    pages, after = [], None
    while True:
        with runtime.reader() as session:
            page = worklist_page(session, WorklistQuery(facility_ids=None, limit=2, after=after))
        if not page:
            break
        pages.append([e.study_instance_uid for e in page])
        after = page[-1].cursor
    assert pages == [order[0:2], order[2:4], order[4:6]]

    with runtime.sessions.begin() as session:
        advance(session, _study(session, uids[0]), StudyState.CANCELLED, actor=ALICE)
    assert uids[0] not in listed()  # the default: studies still to be read
    assert listed(states=("cancelled",)) == [uids[0]]


def test_notes_are_kept_in_order_and_audited(
    runtime: Runtime, facility: FacilityRef, make_dicom
) -> None:
    uid = _ingest(runtime, facility, make_dicom)
    scan_arrivals(runtime)
    with runtime.sessions.begin() as session:
        study = _study(session, uid)
        add_note(session, study, "  patient moved during the scan  ", actor=ALICE)
        add_note(session, study, "compare with last year's", actor=Actor("bob"))
        with pytest.raises(WorklistRefused, match="needs some text"):
            add_note(session, study, "   ", actor=ALICE)
    with runtime.sessions() as session:
        study = _study(session, uid)
        notes = [(n.author, n.text) for n in notes_of(session, study.id)]
        entry = worklist_page(session, WorklistQuery(facility_ids=None))[0]
        audited = session.scalars(
            select(AuditRow.detail).where(AuditRow.action == "workflow").order_by(AuditRow.id)
        ).all()
    assert notes == [
        ("alice", "patient moved during the scan"),
        ("bob", "compare with last year's"),
    ]
    assert entry.notes == 2
    assert [d["change"] for d in audited] == ["note", "note"]
    assert audited[0]["chars"] == len("patient moved during the scan")


def test_a_deleted_study_leaves_the_worklist_with_its_notes(
    runtime: Runtime, facility: FacilityRef, make_dicom
) -> None:
    from noctis.core import deletion
    from noctis.index.worklist import StudyNote

    gone = _ingest(runtime, facility, make_dicom)
    kept = _ingest(runtime, facility, make_dicom)
    scan_arrivals(runtime)
    with runtime.sessions.begin() as session:
        add_note(session, _study(session, gone), "wrong patient", actor=ALICE)
    removed = deletion.delete(
        runtime,
        deletion.Target(facility.id, gone),
        deletion.Actor("admin", "user", "127.0.0.1"),
    )
    assert removed.study_removed
    assert set(_workflow(runtime)) == {kept}
    with runtime.sessions() as session:
        assert session.scalars(select(StudyNote)).all() == []
    # The same study sent again is a new arrival, with nothing of the old one.
    assert _ingest(runtime, facility, make_dicom, StudyInstanceUID=gone) == gone
    assert scan_arrivals(runtime) == 1
    assert _workflow(runtime)[gone].state == "arrived"
