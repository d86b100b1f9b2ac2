"""Routing over REST and /metrics: each user sees the routes of their facilities with their
progress per destination; only administrators send dead letters again (audited), and the
transfers are counted per state on /metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import update

from noctis.core.routing import apply_route, route_study
from noctis.core.runtime import Runtime
from noctis.index.routing import Transfer
from noctis.specs.route import RouteSpec
from support.archive import register_facility
from support.dicomdata import generate_ct_series
from support.incoming import ingest_file


def _routed_study(runtime: Runtime, tmp_path: Path) -> None:
    north = register_facility(
        runtime, "north", [{"aeTitle": "NORTHPACS", "host": "127.0.0.1", "port": 11112}]
    )
    with runtime.sessions.begin() as session:
        spec = RouteSpec.model_validate({"facility": "north", "destinations": ["NORTHPACS"]})
        apply_route(session, "to-pacs", spec)
    files = generate_ct_series(tmp_path / "ct", slices=4, size=16)
    study = str(ingest_file(runtime, north, files[0]).header.study_instance_uid)
    for path in files[1:]:
        ingest_file(runtime, north, path)
    assert route_study(runtime, "north", study) == {"NORTHPACS": 4}
    with runtime.sessions.begin() as session:  # two of them ran out of attempts
        ids = [t.id for t in session.query(Transfer).order_by(Transfer.id).limit(2)]
        session.execute(
            update(Transfer)
            .where(Transfer.id.in_(ids))
            .values(state="dead", attempts=10, last_error="C-STORE status 0xA700 disk full")
        )


def test_users_see_their_facilities_routes_and_admins_retry_dead_letters(
    clients: Any, runtime: Runtime, tmp_path: Path
) -> None:
    _routed_study(runtime, tmp_path)
    north = clients("rad_north").get("/api/routes")
    assert north.status_code == 200, north.text
    [report] = north.json()
    assert (report["facility"], report["name"], report["trigger"]) == ("north", "to-pacs", "stable")
    assert report["destinations"] == [
        {
            "destination": "NORTHPACS",
            "pending": 2,
            "sent": 0,
            "failed": 0,
            "dead": 2,
            "lastError": "C-STORE status 0xA700 disk full",
        }
    ]
    assert clients("rad_south").get("/api/routes").json() == []
    assert clients("rad_south").get("/api/routes/north/to-pacs").status_code == 404
    assert clients("rad_north").get("/api/routes/north/to-pacs").json() == report
    assert clients(None).get("/api/routes").status_code == 401

    metrics = clients(None).get("/metrics").text
    labels = 'destination="NORTHPACS",facility="north",route="to-pacs"'
    assert f'noctis_route_transfers{{{labels},state="dead"}} 2.0' in metrics
    assert f'noctis_route_transfers{{{labels},state="pending"}} 2.0' in metrics

    assert clients("rad_north").post("/api/routes/north/to-pacs/retry").status_code == 403
    assert clients("admin").post("/api/routes/north/nope/retry").status_code == 404
    retried = clients("admin").post("/api/routes/north/to-pacs/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json() == {"retried": 2, "destinations": {"NORTHPACS": 2}}
    after = clients("rad_north").get("/api/routes/north/to-pacs").json()
    assert after["totals"] == {"pending": 4, "sent": 0, "failed": 0, "dead": 0}
    again = clients("admin").post("/api/routes/north/to-pacs/retry").json()
    assert again == {"retried": 0, "destinations": {}}
    audit = clients("admin").get("/api/audit", params={"action": "admin"}).json()["items"]
    assert any(
        e["detail"].get("operation") == "route.retry" and e["detail"]["target"] == "north/to-pacs"
        for e in audit
    )
