"""Orders over REST: technologists and administrators schedule, edit and cancel them,
radiologists read them, referring physicians do not; every route keeps to the caller's
facilities (another facility's order is 404) and every change is in the audit trail."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from noctis.core.runtime import Runtime
from noctis.index import accounts
from support.web import client_for, create_user, token_for

ORDER = {
    "accession_number": "N-1001",
    "patient_id": "P100",
    "patient_name": "Doe^Jane",
    "patient_birth_date": "19800102",
    "patient_sex": "F",
    "requested_procedure_description": "CT head without contrast",
    "procedure_code_value": "CTHEAD",
    "procedure_code_scheme": "99LOCAL",
    "modality": "CT",
    "scheduled_station_ae_title": "NORTH_CT",
    "scheduled_date": "20261207",
    "scheduled_time": "1030",
    "priority": "stat",
    "referring_physician_name": "House^Gregory",
}


@pytest.fixture
def people(runtime: Runtime, app: FastAPI, tokens: dict[str, str]) -> Any:
    """Clients by user: the conftest's, a technologist of north and a facility admin of
    south."""
    create_user(runtime, "tech_north", "technologist", ["north"])
    create_user(runtime, "fadmin_south", "facility-admin", ["south"])
    all_tokens = dict(tokens)
    for name in ("tech_north", "fadmin_south"):
        all_tokens[name] = token_for(runtime, name)
    return lambda name: client_for(app, all_tokens[name])


def audited(runtime: Runtime) -> list[tuple[str, str, str]]:
    with runtime.sessions() as session:
        rows = session.scalars(
            select(accounts.AuditRow)
            .where(accounts.AuditRow.action == "order")
            .order_by(accounts.AuditRow.id)
        )
        return [(row.actor, row.actor_type, row.detail["change"]) for row in rows]


def test_a_technologist_schedules_edits_and_cancels_an_order(people: Any, runtime: Runtime) -> None:
    tech = people("tech_north")
    made = tech.post("/api/orders", json=ORDER)  # one facility: north, without naming it
    assert made.status_code == 201, made.text
    order = made.json()
    assert order["facility"] == "north"
    assert order["status"] == "scheduled"
    assert order["priority"] == "stat"
    assert order["scheduled_time"] == "103000"
    assert order["study_instance_uid"] and order["study"] is None
    again = tech.post("/api/orders", json=ORDER)
    assert again.status_code == 409
    assert "N-1001" in again.json()["detail"]
    edited = tech.patch(f"/api/orders/{order['id']}", json={"scheduled_time": "1100"})
    assert edited.status_code == 200 and edited.json()["scheduled_time"] == "110000"
    listed = tech.get("/api/orders", params={"status": "scheduled", "modality": "ct"}).json()
    assert [o["accession_number"] for o in listed] == ["N-1001"]
    cancelled = tech.post(f"/api/orders/{order['id']}/cancel", json={"reason": "duplicate"})
    assert cancelled.json()["status"] == "cancelled"
    refused = tech.patch(f"/api/orders/{order['id']}", json={"modality": "MR"})
    assert refused.status_code == 409
    assert tech.get("/api/orders", params={"status": "scheduled"}).json() == []
    assert audited(runtime) == [
        ("tech_north", "token", "create"),
        ("tech_north", "token", "update"),
        ("tech_north", "token", "status"),
    ]


def test_bad_orders_get_a_clear_422_and_nothing_is_stored(people: Any, runtime: Runtime) -> None:
    tech = people("tech_north")
    for bad in (
        {**ORDER, "scheduled_date": "2026-12-07"},
        {**ORDER, "accession_number": ""},
        {**ORDER, "priority": "soonish"},
        {**ORDER, "unknown_field": 1},
        {key: value for key, value in ORDER.items() if key != "modality"},
    ):
        response = tech.post("/api/orders", json=bad)
        assert response.status_code == 422, bad
    assert tech.get("/api/orders").json() == []
    assert audited(runtime) == []


def test_roles_on_every_route(people: Any) -> None:
    order = people("admin").post("/api/orders", json={**ORDER, "facility": "north"}).json()
    path = f"/api/orders/{order['id']}"
    # a radiologist reads, never writes
    rad = people("rad_north")
    assert rad.get("/api/orders").status_code == 200
    assert rad.get(path).status_code == 200
    assert rad.post("/api/orders", json=ORDER).status_code == 403
    assert rad.patch(path, json={"modality": "MR"}).status_code == 403
    assert rad.post(f"{path}/cancel").status_code == 403
    # a referring physician does neither
    ref = people("ref_north")
    for response in (
        ref.get("/api/orders"),
        ref.get(path),
        ref.post("/api/orders", json=ORDER),
        ref.patch(path, json={"modality": "MR"}),
        ref.post(f"{path}/cancel"),
    ):
        assert response.status_code == 403
    # nobody signed in
    anonymous = client_for(people("admin").app)
    assert anonymous.get("/api/orders").status_code == 401
    assert anonymous.post("/api/orders", json=ORDER).status_code == 401


def test_another_facilitys_orders_are_not_found_on_any_route(people: Any) -> None:
    north = people("tech_north").post("/api/orders", json=ORDER).json()
    path = f"/api/orders/{north['id']}"
    south_admin = people("fadmin_south")
    south = south_admin.post("/api/orders", json={**ORDER, "patient_id": "S1"})
    assert south.status_code == 201 and south.json()["facility"] == "south"
    # the same accession number is another facility's own
    assert south_admin.get(path).status_code == 404
    assert south_admin.patch(path, json={"modality": "MR"}).status_code == 404
    assert south_admin.post(f"{path}/cancel").status_code == 404
    assert [o["facility"] for o in south_admin.get("/api/orders").json()] == ["south"]
    assert south_admin.get("/api/orders", params={"facility": "north"}).status_code == 404
    assert south_admin.post("/api/orders", json={**ORDER, "facility": "north"}).status_code == 404
    assert people("rad_south").get(path).status_code == 404
    # an administrator sees both, and must say which facility a new order is for
    admin = people("admin")
    assert sorted(o["facility"] for o in admin.get("/api/orders").json()) == ["north", "south"]
    assert admin.post("/api/orders", json={**ORDER, "accession_number": "X"}).status_code == 422
    assert people("tech_north").get(path).json()["status"] == "scheduled"


def test_orders_on_each_index_backend_keep_to_their_facility(accounts_archive: Runtime) -> None:
    """The same routes on SQLite and PostgreSQL: a technologist's order, isolation from the
    other facility's user, the 409 of a taken accession number, and the audit trail."""
    from noctis.api.app import create_app
    from noctis.core.facilities import apply_facility
    from noctis.specs.facility import FacilitySpec

    runtime = accounts_archive
    with runtime.sessions.begin() as session:
        for name in ("north", "south"):
            apply_facility(session, name, FacilitySpec())
    create_user(runtime, "tech_north", "technologist", ["north"])
    create_user(runtime, "tech_south", "technologist", ["south"])
    app = create_app(runtime.settings, runtime)
    north = client_for(app, token_for(runtime, "tech_north"))
    south = client_for(app, token_for(runtime, "tech_south"))
    made = north.post("/api/orders", json=ORDER)
    assert made.status_code == 201, made.text
    assert north.post("/api/orders", json=ORDER).status_code == 409
    assert south.post("/api/orders", json=ORDER).status_code == 201  # south's own N-1001
    path = f"/api/orders/{made.json()['id']}"
    assert south.get(path).status_code == 404
    assert south.post(f"{path}/cancel").status_code == 404
    assert [o["facility"] for o in south.get("/api/orders").json()] == ["south"]
    assert north.post(f"{path}/cancel").json()["status"] == "cancelled"
    assert audited(runtime) == [
        ("tech_north", "token", "create"),
        ("tech_south", "token", "create"),
        ("tech_north", "token", "status"),
    ]
