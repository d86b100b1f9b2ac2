"""The orders page: a technologist schedules an order with the form and sees it listed; bad
input is explained and kept in the form; a radiologist sees the list without the form; a
referring physician is refused; no other facility's order shows."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from noctis.core.runtime import Runtime
from support.web import client_for, create_user, token_for

FORM = {
    "accession_number": "PAGE-1",
    "patient_id": "P77",
    "patient_name": "Roe^Richard",
    "modality": "MR",
    "scheduled_station_ae_title": "NORTH_MR",
    "scheduled_date": "20261208",
    "scheduled_time": "1415",
    "priority": "stat",
    "requested_procedure_description": "MR knee",
}


@pytest.fixture
def tech(runtime: Runtime, app: FastAPI) -> Any:
    create_user(runtime, "tech_north", "technologist", ["north"])
    return client_for(app, token_for(runtime, "tech_north"))


def test_a_technologist_schedules_an_order_from_the_page(tech: Any, clients: Any) -> None:
    page = tech.get("/ui/orders")
    assert page.status_code == 200
    assert 'class="order-form"' in page.text and "No orders." in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    posted = tech.post("/ui/orders", data=FORM, follow_redirects=False)
    assert (posted.status_code, posted.headers["location"]) == (303, "/ui/orders")
    listed = tech.get("/ui/orders").text
    assert "PAGE-1" in listed and "Roe, Richard" in listed and "2026-12-08 14:15" in listed
    assert '<span class="badge stat">STAT</span>' in listed
    # the same order through the API: same facility (the technologist's only one)
    orders = tech.get("/api/orders").json()
    assert [(o["accession_number"], o["facility"]) for o in orders] == [("PAGE-1", "north")]
    # a radiologist of north reads the list, without the form or cancel buttons
    rad = clients("rad_north").get("/ui/orders").text
    assert "PAGE-1" in rad and 'class="order-form"' not in rad and "Cancel" not in rad
    # south sees nothing of north's
    assert "PAGE-1" not in clients("rad_south").get("/ui/orders").text
    refused = clients("ref_north").get("/ui/orders")
    assert refused.status_code == 403 and "PAGE-1" not in refused.text


def test_bad_input_is_explained_and_kept_and_cancel_works(tech: Any) -> None:
    bad = tech.post("/ui/orders", data={**FORM, "scheduled_date": "20261399"})
    assert bad.status_code == 422
    assert "scheduled date" in bad.text and 'value="PAGE-1"' in bad.text
    assert tech.get("/api/orders").json() == []
    tech.post("/ui/orders", data=FORM)
    duplicate = tech.post("/ui/orders", data=FORM)
    assert duplicate.status_code == 409 and "PAGE-1 is taken" in duplicate.text
    order_id = tech.get("/api/orders").json()[0]["id"]
    cancelled = tech.post(f"/ui/orders/{order_id}/cancel", follow_redirects=False)
    assert cancelled.status_code == 303
    assert tech.get(f"/api/orders/{order_id}").json()["status"] == "cancelled"
    assert "PAGE-1" in tech.get("/ui/orders", params={"status": "cancelled"}).text
    assert tech.post("/ui/orders/999999/cancel").status_code == 404
