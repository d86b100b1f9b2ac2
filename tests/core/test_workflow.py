"""The reading workflow's state machine, priority and assignment, on each index backend:
what a radiologist and the audit trail see when a study is claimed, raised or refused."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from noctis.core.ingest import FacilityRef
from noctis.core.runtime import Runtime
from noctis.core.workflow import (
    Actor,
    AlreadyAssigned,
    Priority,
    StudyState,
    TransitionRefused,
    advance,
    assign,
    ensure_workflow,
    flag_critical,
    set_priority,
)
from noctis.index import accounts
from noctis.index.models import Study
from noctis.index.workflow import NotificationEvent, StudyWorkflow
from support.incoming import ingest_file

ALICE = Actor("alice", client="10.0.0.5")
BOB = Actor("bob", client="10.0.0.6")


@pytest.fixture
def study_uid(runtime: Runtime, default_facility: FacilityRef, make_dicom) -> str:
    result = ingest_file(runtime, default_facility, make_dicom(PatientName="DOE^JANE"))
    return result.header.study_instance_uid


def _study(session, uid: str) -> Study:
    return session.scalars(select(Study).where(Study.study_instance_uid == uid)).one()


def test_a_study_is_read_through_its_states_and_each_change_is_audited(
    runtime: Runtime, study_uid: str
) -> None:
    with runtime.sessions.begin() as session:
        study = _study(session, study_uid)
        assert ensure_workflow(session, study).state == StudyState.ARRIVED
        assert ensure_workflow(session, study).state == StudyState.ARRIVED  # idempotent
        advance(session, study, StudyState.READY, actor=Actor.system("stable"))
        assign(session, study, "alice", actor=ALICE, only_if_free=True)
        advance(session, study, StudyState.PRELIMINARY, actor=ALICE)
        advance(session, study, StudyState.FINAL, actor=ALICE)
        with pytest.raises(TransitionRefused, match="final cannot become in-reading"):
            advance(session, study, StudyState.IN_READING, actor=ALICE)
        advance(session, study, StudyState.AMENDED, actor=ALICE)
        advance(session, study, StudyState.AMENDED, actor=ALICE)
    with runtime.sessions() as session:
        row = session.get(StudyWorkflow, _study(session, study_uid).id)
        assert (row.state, row.assignee) == ("amended", "alice")
        changes = session.execute(
            select(accounts.AuditRow.actor, accounts.AuditRow.detail)
            .where(accounts.AuditRow.action == "workflow")
            .order_by(accounts.AuditRow.id)
        ).all()
    states = [d["state"] for _, d in changes if d["change"] == "state"]
    assert states == ["ready", "in-reading", "preliminary", "final", "amended", "amended"]
    assert ("alice", {"change": "assign", "assignee": "alice"}) in changes


def test_two_radiologists_claiming_at_once_one_gets_it(runtime: Runtime, study_uid: str) -> None:
    with runtime.sessions.begin() as session:
        ensure_workflow(session, _study(session, study_uid))
    outcomes: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def claim(actor: Actor) -> None:
        barrier.wait()
        try:
            with runtime.sessions.begin() as session:
                assign(
                    session,
                    _study(session, study_uid),
                    actor.subject,
                    actor=actor,
                    only_if_free=True,
                )
            outcomes[actor.subject] = "claimed"
        except AlreadyAssigned as refused:
            outcomes[actor.subject] = str(refused)

    threads = [threading.Thread(target=claim, args=(a,)) for a in (ALICE, BOB)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes.values())[0] == "claimed"
    winner = next(name for name, outcome in outcomes.items() if outcome == "claimed")
    loser = "bob" if winner == "alice" else "alice"
    assert outcomes[loser] == f"the study is assigned to {winner}"


def test_a_critical_result_makes_the_study_stat_and_notifies_once(
    runtime: Runtime, study_uid: str
) -> None:
    with runtime.sessions.begin() as session:
        study = _study(session, study_uid)
        assert set_priority(session, study, Priority.URGENT, actor=ALICE, reason="order")
        assert not set_priority(
            session, study, Priority.ROUTINE, actor=ALICE, reason="x", only_raise=True
        )
        assert flag_critical(session, study, actor=Actor.system("results"), reason="bleed")
        assert not flag_critical(session, study, actor=Actor.system("results"), reason="bleed")
    with runtime.sessions() as session:
        row = session.get(StudyWorkflow, _study(session, study_uid).id)
        assert (row.priority, row.critical, row.priority_reason) == (Priority.STAT, True, "bleed")
        events = session.execute(
            select(NotificationEvent.kind, NotificationEvent.title).order_by(NotificationEvent.id)
        ).all()
    assert [kind for kind, _ in events] == ["critical-result", "stat-arrived"]
    assert all("DOE, JANE" in title for _, title in events)


def test_priorities_parse_from_people_and_from_dicom() -> None:
    assert Priority.parse("stat") is Priority.STAT
    assert Priority.parse("HIGH") is Priority.URGENT
    assert Priority.parse("") is Priority.ROUTINE
    with pytest.raises(ValueError, match="unknown priority"):
        Priority.parse("whenever")
