"""The worklist's REST API on SQLite and PostgreSQL: what radiologists, administrators,
technologists and referring physicians of two facilities can list and change, and what the
audit trail keeps of it."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from noctis.api.app import create_app
from noctis.core.ingest import FacilityRef
from noctis.core.runtime import Runtime
from noctis.index.accounts import AuditRow
from noctis.index.models import Facility
from noctis.index.workflow import NotificationEvent
from noctis.worker.arrival import scan_arrivals
from support.archive import embedded_settings, open_runtime
from support.dicomdata import small_ct
from support.incoming import ingest_file
from support.postgres import PostgresServer
from support.web import client_for, create_user, token_for

USERS = {
    "rad_north": ("radiologist", ["north"]),
    "rad2_north": ("radiologist", ["north"]),
    "rad_south": ("radiologist", ["south"]),
    "tech_north": ("technologist", ["north"]),
    "fadmin_north": ("facility-admin", ["north"]),
    "ref_north": ("referring-physician", ["north"]),
    "admin": ("admin", []),
}


@dataclass
class WorklistArchive:
    runtime: Runtime
    clients: dict[str, httpx.Client]
    facilities: dict[str, FacilityRef]
    workdir: Path

    def client(self, user: str | None) -> httpx.Client:
        return self.clients[user or ""]

    def study(self, facility: str, tag: str, **attributes: object) -> str:
        """A new study (one CT instance) on the worklist; its UID. ``tag`` goes in the
        patient ID, so a test lists only its own studies (``q=tag``)."""
        ds = small_ct(PatientID=f"{tag}-{secrets.token_hex(3)}", **attributes)
        path = self.workdir / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        ingest_file(self.runtime, self.facilities[facility], path)
        scan_arrivals(self.runtime)
        return str(ds.StudyInstanceUID)

    def audit(self, study_uid: str) -> list[tuple[str, dict]]:
        with self.runtime.sessions() as session:
            rows = session.execute(
                select(AuditRow.actor, AuditRow.detail)
                .where(AuditRow.action == "workflow", AuditRow.study_instance_uid == study_uid)
                .order_by(AuditRow.id)
            )
            return [(actor, detail) for actor, detail in rows]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def archive(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorklistArchive]:
    root = tmp_path_factory.mktemp("worklist")
    server: PostgresServer | None = None
    database = f"worklist_{secrets.token_hex(4)}"
    if request.param == "postgres":
        server = request.getfixturevalue("postgres")
        server.up()
        url = server.create_database(database)
    else:
        url = f"sqlite:///{root / 'index.sqlite3'}"
    runtime = open_runtime(embedded_settings(root, database_url=url))
    facilities = {}
    with runtime.sessions.begin() as session:
        for name in ("north", "south"):
            row = Facility(name=name, display_name=name.title())
            session.add(row)
            session.flush()
            facilities[name] = FacilityRef(row.id, name)
    app = create_app(runtime.settings, runtime)
    clients = {"": client_for(app)}
    for username, (role, granted) in USERS.items():
        create_user(runtime, username, role, granted)
        clients[username] = client_for(app, token_for(runtime, username))
    workdir = root / "files"
    workdir.mkdir()
    try:
        yield WorklistArchive(runtime, clients, facilities, workdir)
    finally:
        for client in clients.values():
            client.close()
        runtime.close()
        if server is not None:
            server.drop_database(database)


def _listed(client: httpx.Client, **params: object) -> list[str]:
    response = client.get("/api/worklist", params=params)
    assert response.status_code == 200, response.text
    return [row["study_instance_uid"] for row in response.json()["items"]]


def test_stat_comes_first_then_oldest_within_the_callers_facilities(
    archive: WorklistArchive,
) -> None:
    first = archive.study("north", "order", Modality="MR")
    second = archive.study("north", "order")
    urgent = archive.study("north", "order")
    south = archive.study("south", "order")
    admin = archive.client("admin")
    raised = admin.post(
        f"/api/worklist/north/{urgent}/priority", json={"priority": "stat", "reason": "ED"}
    )
    assert raised.status_code == 200, raised.text
    assert (raised.json()["priority"], raised.json()["priority_reason"]) == ("STAT", "ED")

    rad = archive.client("rad_north")
    assert _listed(rad, q="order") == [urgent, first, second]
    assert _listed(archive.client("rad_south"), q="order") == [south]
    assert _listed(admin, q="order") == [urgent, first, second, south]
    assert _listed(admin, q="order", facility="south") == [south]
    assert _listed(rad, q="order", modality="mr") == [first]
    assert _listed(rad, q="order", priority="stat") == [urgent]
    assert _listed(rad, q="order", study_date_from="2024-01-02", study_date_to="2024-01-02") == [
        urgent,
        first,
        second,
    ]
    assert _listed(rad, q="order", study_date_from="2024-01-03") == []

    row = rad.get("/api/worklist", params={"q": "order"}).json()["items"][1]
    assert row["facility"] == "north" and row["modalities"] == ["MR"]
    assert (row["state"], row["priority"], row["assignee"], row["notes"]) == (
        "arrived",
        "routine",
        None,
        0,
    )
    assert row["viewer_url"] == f"/viewer?StudyInstanceUIDs={first}"
    assert row["report_url"] == f"/ui/reports/north/{first}"
    assert (row["number_of_series"], row["number_of_instances"]) == (1, 1)

    # Keyset pages: one row each, then no cursor.
    seen, cursor = [], None
    while True:
        params = {"q": "order", "limit": 1} | ({"cursor": cursor} if cursor else {})
        page = rad.get("/api/worklist", params=params).json()
        seen += [r["study_instance_uid"] for r in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [urgent, first, second]
    bad = rad.get("/api/worklist", params={"cursor": "nonsense"})
    assert bad.status_code == 422 and "cursor" in bad.json()["detail"]
    assert rad.get("/api/worklist", params={"state": "asleep"}).status_code == 422
    assert rad.get("/api/worklist", params={"modality": "C%"}).status_code == 422
    # Another facility's name is unknown to the caller, as a missing one is.
    assert rad.get("/api/worklist", params={"facility": "south"}).status_code == 404
    assert rad.get("/api/worklist", params={"facility": "nowhere"}).status_code == 404


def test_a_claim_is_one_radiologists_and_the_other_is_told_who_has_it(
    archive: WorklistArchive,
) -> None:
    study = archive.study("north", "claim")
    rad, rad2 = archive.client("rad_north"), archive.client("rad2_north")
    claimed = rad.post(f"/api/worklist/north/{study}/claim")
    assert claimed.status_code == 200, claimed.text
    assert (claimed.json()["state"], claimed.json()["assignee"]) == ("in-reading", "rad_north")
    again = rad2.post(f"/api/worklist/north/{study}/claim")
    assert again.status_code == 409
    assert again.json()["detail"] == "the study is assigned to rad_north"
    assert _listed(rad, q="claim", mine="true") == [study]
    assert _listed(rad2, q="claim", mine="true") == []
    assert _listed(rad2, q="claim", unassigned="true") == []

    released = rad.post(f"/api/worklist/north/{study}/release")
    assert (released.json()["state"], released.json()["assignee"]) == ("ready", None)
    assert _listed(rad2, q="claim", unassigned="true") == [study]
    assert rad2.post(f"/api/worklist/north/{study}/claim").json()["assignee"] == "rad2_north"

    changes = [
        (actor, d["change"], d.get("assignee", d.get("state"))) for actor, d in archive.audit(study)
    ]
    assert changes == [
        ("rad_north", "assign", "rad_north"),
        ("rad_north", "state", "in-reading"),
        ("rad_north", "assign", None),
        ("rad_north", "state", "ready"),
        ("rad2_north", "assign", "rad2_north"),
        ("rad2_north", "state", "in-reading"),
    ]


def test_assigning_needs_a_radiologist_of_the_studys_facility(archive: WorklistArchive) -> None:
    study = archive.study("north", "assign")
    url = f"/api/worklist/north/{study}/assign"
    fadmin = archive.client("fadmin_north")
    for who, why in (
        ("ref_north", "only radiologists read studies"),
        ("rad_south", "may not see this study's facility"),
        ("nobody", "no enabled user named 'nobody'"),
    ):
        answer = fadmin.post(url, json={"assignee": who})
        assert answer.status_code == 422 and why in answer.json()["detail"], answer.text
    given = fadmin.post(url, json={"assignee": "rad2_north"})
    assert (given.status_code, given.json()["assignee"]) == (200, "rad2_north")
    assert archive.client("tech_north").post(url, json={"assignee": "rad_north"}).status_code == 403
    # An administrator reassigns over a claim; null unassigns.
    assert fadmin.post(url, json={"assignee": "rad_north"}).json()["assignee"] == "rad_north"
    cleared = fadmin.post(url, json={"assignee": None}).json()
    assert (cleared["assignee"], cleared["state"]) == (None, "ready")
    assert ("fadmin_north", {"change": "assign", "assignee": "rad2_north"}) in archive.audit(study)


def test_cancel_and_reinstate_and_stat_notifies(archive: WorklistArchive) -> None:
    study = archive.study("north", "cancel")
    admin = archive.client("admin")
    base = f"/api/worklist/north/{study}"
    assert admin.post(f"{base}/state", json={"state": "ready"}).status_code == 409
    cancelled = admin.post(f"{base}/state", json={"state": "cancelled"})
    assert cancelled.json()["state"] == "cancelled"
    assert _listed(admin, q="cancel") == []  # not to be read
    assert _listed(admin, q="cancel", state="cancelled") == [study]
    assert _listed(admin, q="cancel", state="any") == [study]
    refused = archive.client("rad_north").post(f"{base}/claim")
    assert refused.status_code == 409 and "cancelled" in refused.json()["detail"]
    assert admin.post(f"{base}/state", json={"state": "ready"}).json()["state"] == "ready"
    assert admin.post(f"{base}/state", json={"state": "final"}).status_code == 422

    assert admin.post(f"{base}/priority", json={"priority": "stat"}).status_code == 200
    with archive.runtime.sessions() as session:
        kinds = session.scalars(
            select(NotificationEvent.kind).where(NotificationEvent.study_instance_uid == study)
        ).all()
    assert kinds == ["stat-arrived"]
    assert [d["change"] for _, d in archive.audit(study)] == ["state", "state", "priority"]


def test_notes_are_listed_oldest_first_and_counted(archive: WorklistArchive) -> None:
    study = archive.study("north", "notes")
    base = f"/api/worklist/north/{study}/notes"
    tech, rad = archive.client("tech_north"), archive.client("rad_north")
    made = tech.post(base, json={"text": "patient could not hold breath"})
    assert made.status_code == 201, made.text
    assert rad.post(base, json={"text": "seen, motion noted"}).status_code == 201
    assert rad.post(base, json={"text": "   "}).status_code == 422
    assert rad.post(base, json={"text": "x" * 10_001}).status_code == 422
    notes = rad.get(base).json()
    assert [(n["author"], n["text"]) for n in notes] == [
        ("tech_north", "patient could not hold breath"),
        ("rad_north", "seen, motion noted"),
    ]
    assert rad.get("/api/worklist", params={"q": "notes"}).json()["items"][0]["notes"] == 2
    assert [d["change"] for _, d in archive.audit(study)] == ["note", "note"]


ROUTES: list[tuple[str, str, dict | None]] = [
    ("GET", "", None),
    ("POST", "/claim", None),
    ("POST", "/release", None),
    ("POST", "/assign", {"assignee": "rad_north"}),
    ("POST", "/priority", {"priority": "stat"}),
    ("POST", "/state", {"state": "cancelled"}),
    ("GET", "/notes", None),
    ("POST", "/notes", {"text": "hello"}),
]


def test_every_route_refuses_referring_physicians_and_hides_other_facilities(
    archive: WorklistArchive,
) -> None:
    study = archive.study("north", "guard")
    call: Callable[[str | None, str, str, dict | None], httpx.Response]

    def call(user: str | None, method: str, suffix: str, body: dict | None) -> httpx.Response:
        return archive.client(user).request(
            method, f"/api/worklist/north/{study}{suffix}", json=body
        )

    assert archive.client("ref_north").get("/api/worklist").status_code == 403
    assert archive.client(None).get("/api/worklist").status_code == 401
    for method, suffix, body in ROUTES:
        assert call(None, method, suffix, body).status_code == 401, suffix
        assert call("ref_north", method, suffix, body).status_code == 403, suffix
        hidden = call("rad_south", method, suffix, body)
        assert hidden.status_code == 404, (suffix, hidden.text)
    assert call("rad_north", "GET", "/../../north/1.2.3.4", None).status_code == 404
    for suffix in ("/claim",):
        assert call("tech_north", "POST", suffix, None).status_code == 403
        assert call("admin", "POST", suffix, None).status_code == 403  # admins assign, not read
    for suffix, body in (("/priority", {"priority": "stat"}), ("/state", {"state": "cancelled"})):
        assert call("tech_north", "POST", suffix, body).status_code == 403
    assert archive.audit(study) == []  # nothing refused changed anything
    assert _listed(archive.client("rad_south"), q="guard") == []
