"""The audit trail: recording never breaks the caller; administrators query it."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from noctis.api.audit import web_event
from noctis.api.security import Principal
from noctis.core.audit import AuditAction, AuditEvent, AuditOutcome, DatabaseAuditSink
from noctis.core.roles import Role
from noctis.core.runtime import Runtime
from noctis.index.accounts import AuditRow
from noctis.index.db import open_index
from support.web import auth_app, client_for, create_user, token_for

STUDY_A = "1.2.826.0.1.3680043.8.498.1"
STUDY_B = "1.2.826.0.1.3680043.8.498.2"


@pytest.fixture
def runtime(accounts_archive: Runtime) -> Runtime:
    return accounts_archive


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    return auth_app(runtime)


@pytest.fixture
def admin(runtime: Runtime, app: FastAPI) -> TestClient:
    create_user(runtime, "auditor", "admin", facilities=[])
    return client_for(app, token_for(runtime, "auditor"))


def test_an_event_is_written_as_one_row(runtime: Runtime) -> None:
    runtime.audit.record(
        AuditEvent(
            actor="CT_ROOM_1",
            actor_type="ae",
            client="10.0.0.7",
            action=AuditAction.STORE,
            outcome=AuditOutcome.SUCCESS,
            study_instance_uid=STUDY_A,
            facility_id=1,
            detail={"sop_instances": 12},
        )
    )
    with runtime.sessions() as session:
        event = session.scalars(select(AuditRow)).one()
    assert (event.actor, event.actor_type, event.client) == ("CT_ROOM_1", "ae", "10.0.0.7")
    assert (event.action, event.outcome, event.study_instance_uid) == ("store", "success", STUDY_A)
    assert event.detail == {"sop_instances": 12} and event.at is not None


def test_recording_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # An index without the audit table: the insert fails, the caller carries on.
    broken = open_index(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    sink = DatabaseAuditSink(broken)
    with caplog.at_level(logging.ERROR, logger="noctis.core.audit"):
        sink.record(
            AuditEvent(
                actor="rad", actor_type="user", client="::1", action="retrieve", outcome="ok"
            )
        )
        assert sink.flush()
    sink.close()
    broken.close()
    assert "audit event not recorded" in caplog.text and "actor=rad" in caplog.text


def test_sink_records_principal_and_method(runtime: Runtime) -> None:
    sink = DatabaseAuditSink(runtime.index)
    robot = Principal("robot", Role.TECHNOLOGIST, frozenset({1}), method="token")
    sink.record(web_event(robot, "127.0.0.1", "store", "success"))
    sink.record(web_event(None, "127.0.0.1", "query", "denied"))
    assert sink.flush()
    with runtime.sessions() as session:
        rows = session.execute(
            select(AuditRow.actor, AuditRow.actor_type).order_by(AuditRow.id)
        ).all()
    assert [tuple(r) for r in rows] == [("robot", "token"), ("anonymous", "user")]


def _seed(runtime: Runtime) -> None:
    base = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    for i in range(25):
        runtime.audit.record(
            AuditEvent(
                actor="rad" if i % 2 else "tech",
                actor_type="user",
                client="10.1.1.1",
                action="retrieve" if i % 5 else "query",
                outcome="success",
                study_instance_uid=STUDY_A if i < 20 else STUDY_B,
            )
        )
    with runtime.sessions.begin() as session:
        for event in session.scalars(select(AuditRow)):
            session.execute(
                update(AuditRow)
                .where(AuditRow.id == event.id)
                .values(at=base + timedelta(minutes=event.id))
            )


def test_admin_filters_and_pages_the_trail(runtime: Runtime, admin: TestClient) -> None:
    _seed(runtime)
    page = admin.get("/api/audit", params={"user": "rad", "study": STUDY_A, "limit": 4}).json()
    assert [e["actor"] for e in page["items"]] == ["rad"] * 4
    assert page["next_offset"] == 4
    ats = [e["at"] for e in page["items"]]
    assert ats == sorted(ats, reverse=True)  # newest first
    everything: list[dict[str, object]] = []
    offset: int | None = 0
    while offset is not None:
        chunk = admin.get(
            "/api/audit", params={"user": "rad", "study": STUDY_A, "limit": 4, "offset": offset}
        ).json()
        everything += chunk["items"]
        offset = chunk["next_offset"]
    assert len(everything) == 10 and len({e["id"] for e in everything}) == 10
    queries = admin.get("/api/audit", params={"action": "query"}).json()["items"]
    assert len(queries) == 5
    window = admin.get(
        "/api/audit",
        params={"since": "2026-01-10T12:05:00Z", "until": "2026-01-10T12:10:00Z"},
    ).json()["items"]
    assert sorted(e["id"] for e in window) == [5, 6, 7, 8, 9]
    assert admin.get("/api/audit", params={"study": STUDY_B}).json()["next_offset"] is None
    assert admin.get("/api/audit", params={"limit": 5000}).status_code == 422


def test_admin_actions_are_in_the_trail(runtime: Runtime, admin: TestClient) -> None:
    admin.post("/api/users", json={"username": "new", "role": "radiologist", "password": "x" * 12})
    items = admin.get("/api/audit", params={"action": "admin"}).json()["items"]
    assert [(e["actor"], e["actor_type"], e["detail"]["operation"]) for e in items] == [
        ("auditor", "token", "user.create")
    ]


def test_sink_writes_before_returning_and_queues_when_the_index_is_busy(
    runtime: Runtime,
) -> None:
    sink = DatabaseAuditSink(runtime.index)
    rad = Principal("rad", Role.RADIOLOGIST, frozenset({1}))
    sink.record(web_event(rad, "::1", "retrieve", "success"))
    with runtime.sessions() as session:  # written inline: no flush needed
        assert session.scalars(select(AuditRow.action)).all() == ["retrieve"]
    # Another index transaction is open (on SQLite: the write lock) while recording...
    with runtime.sessions.begin() as session:
        session.execute(select(AuditRow.id)).all()
        recording = threading.Thread(
            target=sink.record, args=(web_event(rad, "::1", "store", "success"),)
        )
        recording.start()
        recording.join(timeout=10)
        # ...and record() returns while it still is: it queued the event, it did not wait.
        assert not recording.is_alive(), "record() waited for the other transaction"
    assert sink.flush()
    with runtime.sessions() as session:
        events = session.scalars(select(AuditRow).order_by(AuditRow.id)).all()
    assert [e.action for e in events] == ["retrieve", "store"]
    assert all(e.at is not None for e in events)
    sink.close()
