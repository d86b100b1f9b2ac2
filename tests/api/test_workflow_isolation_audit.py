"""A study of another facility, asked for on any workflow route, answers as an unknown study
would (404) and the audit trail records the refusal with the facility that holds it; an
unknown study records nothing of the kind."""

from __future__ import annotations

from sqlalchemy import select

from noctis.index.accounts import AuditRow
from noctis.index.models import Facility


def test_another_facilitys_study_is_404_everywhere_and_each_refusal_is_audited(
    clients, dw, runtime
) -> None:
    study = dw.build_study(["explicit"])
    assert dw.stow(clients("rad_north"), list(study.files.values())).status_code == 200
    uid = study.study_uid
    rad_south = clients("rad_south")
    asked = [
        ("GET", f"/api/facilities/north/studies/{uid}"),
        ("GET", f"/api/studies/north/{uid}/results"),
        ("GET", f"/api/studies/north/{uid}/report"),
        ("GET", f"/api/studies/north/{uid}/attachments"),
        ("POST", f"/api/worklist/north/{uid}/claim"),
        ("GET", f"/api/worklist/north/{uid}/notes"),
    ]
    for method, path in asked:
        answer = rad_south.request(method, path)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["detail"] == f"no study {uid} in facility 'north'"
    unknown = "1.2.826.0.1.3680043.8.498.1"
    assert rad_south.get(f"/api/studies/north/{unknown}/results").status_code == 404

    runtime.audit.flush()
    with runtime.sessions() as session:
        north = session.scalar(select(Facility.id).where(Facility.name == "north"))
        refusals = session.execute(
            select(
                AuditRow.actor, AuditRow.facility_id, AuditRow.study_instance_uid, AuditRow.detail
            )
            .where(AuditRow.action == "study", AuditRow.outcome == "denied")
            .order_by(AuditRow.id)
        ).all()
    assert [(r.actor, r.facility_id, r.study_instance_uid) for r in refusals] == [
        ("rad_south", north, uid)
    ] * len(asked)
    assert [(r.detail["method"], r.detail["path"]) for r in refusals] == asked
