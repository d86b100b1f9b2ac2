"""Fanning the notification outbox out, on SQLite and PostgreSQL: who hears of a STAT study
and of a final report (by role, by facility, by their own choice), that a rolled-back change
notifies nobody, and that workers fanning out at once notify each user once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import func, inspect, select

from noctis.core.facilities import apply_facility
from noctis.core.ingest import FacilityRef
from noctis.core.notifications import NotificationKind, notify
from noctis.core.notify_delivery import prune
from noctis.core.notify_fanout import fan_out
from noctis.core.notify_inbox import Preferences, inbox, set_preferences, user_id_of
from noctis.core.roles import Role
from noctis.core.runtime import Runtime
from noctis.core.workflow import Actor, Priority, set_priority
from noctis.index.migrate import alembic_config, upgrade
from noctis.index.models import Study, utcnow
from noctis.index.notify import NotificationDelivery, UserNotification
from noctis.index.workflow import NotificationEvent
from noctis.specs.facility import FacilitySpec
from support.archive import embedded_settings, open_runtime, register_facility
from support.incoming import ingest_file
from support.web import create_user

USERS = {
    "rad_north": ("radiologist", ["north"]),
    "fadmin_north": ("facility-admin", ["north"]),
    "ref_north": ("referring-physician", ["north"]),
    "tech_north": ("technologist", ["north"]),
    "rad_south": ("radiologist", ["south"]),
    "admin": ("admin", []),
}


@pytest.fixture(params=["sqlite", "postgres"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    runtime = open_runtime(embedded_settings(tmp_path, database_url=url))
    yield runtime
    runtime.close()


@pytest.fixture
def north(runtime: Runtime) -> FacilityRef:
    facility = register_facility(runtime, "north")
    register_facility(runtime, "south")
    for username, (role, facilities) in USERS.items():
        create_user(runtime, username, role, facilities, password="a-long-enough-password")
    return facility


def _study(runtime: Runtime, facility: FacilityRef, make_dicom) -> str:
    result = ingest_file(runtime, facility, make_dicom(PatientName="DOE^JANE", PatientID="P1"))
    return result.header.study_instance_uid


def _inboxes(runtime: Runtime) -> dict[str, list[str]]:
    """Username -> kinds of the notifications in their list."""
    with runtime.sessions() as session:
        found = {}
        for username in USERS:
            items, _ = inbox(session, user_id_of(session, username), None)
            found[username] = [item["kind"] for item in items]
        return found


def _raise_stat(runtime: Runtime, study_uid: str, actor: str = "tech_north") -> None:
    with runtime.sessions.begin() as session:
        study = session.scalars(select(Study).where(Study.study_instance_uid == study_uid)).one()
        set_priority(session, study, Priority.STAT, actor=Actor(actor), reason="trauma")


def test_a_stat_study_reaches_the_radiologists_and_administrators_of_its_facility_only(
    runtime: Runtime, north: FacilityRef, make_dicom
) -> None:
    study_uid = _study(runtime, north, make_dicom)
    _raise_stat(runtime, study_uid)
    assert fan_out(runtime) == 1
    heard = {user for user, kinds in _inboxes(runtime).items() if kinds}
    assert heard == {"rad_north", "fadmin_north"}
    with runtime.sessions() as session:
        items, unread = inbox(session, user_id_of(session, "rad_north"), None)
    assert unread == 1
    assert items[0]["title"].startswith("STAT study: DOE, JANE")
    assert items[0]["studyInstanceUID"] == study_uid and items[0]["reason"] == "trauma"
    assert fan_out(runtime) == 0  # nothing fanned out twice


def test_nobody_is_told_of_their_own_change(
    runtime: Runtime, north: FacilityRef, make_dicom
) -> None:
    _raise_stat(runtime, _study(runtime, north, make_dicom), actor="fadmin_north")
    fan_out(runtime)
    assert {user for user, kinds in _inboxes(runtime).items() if kinds} == {"rad_north"}


def test_a_final_report_reaches_referring_physicians_and_radiologists_and_opt_outs_hold(
    runtime: Runtime, north: FacilityRef
) -> None:
    with runtime.sessions.begin() as session:
        set_preferences(
            session,
            user_id_of(session, "rad_north"),
            Role.RADIOLOGIST,
            Preferences(["stat-arrived"], ["in-app"], ""),  # no reports, thank you
        )
        set_preferences(  # a technologist may choose to hear of final reports
            session,
            user_id_of(session, "tech_north"),
            Role.TECHNOLOGIST,
            Preferences(["report-final"], ["in-app"], ""),
        )
        notify(
            session,
            NotificationKind.REPORT_FINAL,
            facility_id=north.id,
            title="Report final",
            study_instance_uid="1.2.3",
        )
    fan_out(runtime)
    heard = {user for user, kinds in _inboxes(runtime).items() if kinds}
    assert heard == {"ref_north", "tech_north"}


def test_a_rolled_back_change_notifies_nobody(
    runtime: Runtime, north: FacilityRef, make_dicom
) -> None:
    study_uid = _study(runtime, north, make_dicom)
    with pytest.raises(RuntimeError, match="refused later"), runtime.sessions.begin() as session:
        study = session.scalars(select(Study)).one()
        set_priority(session, study, Priority.STAT, actor=Actor("rad_north"))
        raise RuntimeError("the change was refused later in its transaction")
    assert fan_out(runtime) == 0
    assert not any(_inboxes(runtime).values())
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(NotificationEvent)) == 0
    _raise_stat(runtime, study_uid)  # the same change committed does notify
    assert fan_out(runtime) == 1


def test_workers_fanning_out_at_once_notify_each_user_once(
    runtime: Runtime, north: FacilityRef
) -> None:
    spec = FacilitySpec.model_validate(
        {
            "notifications": {
                "webhooks": [
                    {
                        "name": "pager",
                        "url": "http://127.0.0.1:9/hook",
                        "secretRef": {"name": "hooks", "key": "pager"},
                    }
                ]
            }
        }
    )
    with runtime.sessions.begin() as session:
        apply_facility(session, "north", spec)
        for number in range(60):
            notify(
                session,
                NotificationKind.STAT_ARRIVED,
                facility_id=north.id,
                title=f"STAT {number}",
                study_instance_uid=f"1.2.{number}",
            )
    taken: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            while count := fan_out(runtime, batch=7):
                taken.append(count)
        except BaseException as failed:  # pragma: no cover - reported below
            errors.append(failed)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sum(taken) == 60
    with runtime.sessions() as session:
        per_user = session.execute(
            select(UserNotification.user_id, func.count()).group_by(UserNotification.user_id)
        ).all()
        assert sorted(count for _, count in per_user) == [60, 60]  # rad_north, fadmin_north
        webhook_calls = session.scalar(select(func.count()).select_from(NotificationDelivery))
        assert webhook_calls == 60


def test_0016_adds_the_notification_tables_and_goes_back(runtime: Runtime) -> None:
    """The tables come with 0016 (on both databases) and a downgrade to the revision before
    it removes them."""
    url = runtime.settings.resolved_database_url()
    tables = {
        "user_notification",
        "notification_preference",
        "facility_notification_settings",
        "notification_delivery",
    }
    assert tables <= set(inspect(runtime.engine).get_table_names())
    runtime.engine.dispose()
    command.downgrade(alembic_config(url), "0016-1")
    runtime.engine.dispose()
    assert not tables & set(inspect(runtime.engine).get_table_names())
    upgrade(url)
    runtime.engine.dispose()
    assert tables <= set(inspect(runtime.engine).get_table_names())


def test_old_notifications_are_forgotten_once_nothing_is_left_to_deliver(
    runtime: Runtime, north: FacilityRef
) -> None:
    with runtime.sessions.begin() as session:
        for title in ("old, delivered", "old, webhook still failing", "recent"):
            notify(session, NotificationKind.STAT_ARRIVED, facility_id=north.id, title=title)
    fan_out(runtime)
    with runtime.sessions.begin() as session:
        events = {e.title: e for e in session.scalars(select(NotificationEvent))}
        for title in ("old, delivered", "old, webhook still failing"):
            events[title].created_at = utcnow() - timedelta(days=91)
        session.add(
            NotificationDelivery(
                event_id=events["old, webhook still failing"].id,
                facility_id=north.id,
                channel="webhook",
                target="pager",
                state="failed",
                last_error="HTTP 503",
            )
        )
    with runtime.sessions.begin() as session:
        assert prune(session, keep_days=90) == 1
    with runtime.sessions() as session:
        left = set(session.scalars(select(NotificationEvent.title)))
        assert left == {"old, webhook still failing", "recent"}
        assert session.scalar(select(func.count()).select_from(UserNotification)) == 4
    assert {kind for kinds in _inboxes(runtime).values() for kind in kinds} == {"stat-arrived"}
