"""The worklist's pages, as a browser without script uses them: the table (STAT first, the
filters as a GET form), claim and release as POST forms that come back to the page, the
study's page with its notes and actions, and the same roles and isolation as the API."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from noctis.core.ingest import FacilityRef
from noctis.core.results import SETTLE_SECONDS, scan_results
from noctis.core.runtime import Runtime
from noctis.core.workflow import Actor, Priority, set_priority
from noctis.index.accounts import AuditRow
from noctis.index.models import Facility, Study
from noctis.worker.arrival import scan_arrivals
from support import analysis as an
from support.dicomdata import small_ct
from support.incoming import ingest_file


@pytest.fixture
def add_study(runtime: Runtime, tmp_path: Path):
    def add(facility: str, priority: Priority = Priority.ROUTINE, **attributes: object) -> str:
        with runtime.sessions() as session:
            row = session.scalars(select(Facility).where(Facility.name == facility)).one()
            ref = FacilityRef(row.id, row.name)
        ds = small_ct(**attributes)
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        ingest_file(runtime, ref, path)
        scan_arrivals(runtime)
        if priority is not Priority.ROUTINE:
            with runtime.sessions.begin() as session:
                study = session.scalars(
                    select(Study).where(Study.study_instance_uid == ds.StudyInstanceUID)
                ).one()
                set_priority(session, study, priority, actor=Actor("admin"), reason="ED")
        return str(ds.StudyInstanceUID)

    return add


def _rows(html: str) -> list[str]:
    return re.findall(r'<tr class="study [^"]*" data-study="([^"]+)"', html)


def test_the_worklist_page_lists_stat_first_and_a_claim_comes_back_to_it(
    clients: Any, add_study, runtime: Runtime
) -> None:
    routine = add_study("north", PatientName="Early^Routine", Modality="MR")
    stat = add_study("north", Priority.STAT, PatientName="Late^Stat")
    add_study("south", PatientName="Other^Facility")
    rad = clients("rad_north")
    page = rad.get("/ui/worklist")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert _rows(page.text) == [stat, routine]
    assert "Late, Stat" in page.text and "Other, Facility" not in page.text
    assert f'href="/viewer?StudyInstanceUIDs={stat}"' in page.text
    assert f'href="/ui/reports/north/{stat}"' in page.text
    assert '<span class="badge stat">STAT</span>' in page.text

    back = "/ui/worklist?q=late"
    claimed = rad.post(
        f"/ui/worklist/north/{stat}/claim", data={"next": back}, follow_redirects=False
    )
    assert (claimed.status_code, claimed.headers["location"]) == (303, back)
    filtered = rad.get(back).text
    assert _rows(filtered) == [stat]
    assert '<td class="assignee">rad_north</td>' in filtered
    assert f"/ui/worklist/north/{stat}/release" in filtered
    # Somewhere else than our pages is never where a form sends the browser.
    elsewhere = rad.post(
        f"/ui/worklist/north/{stat}/release",
        data={"next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert elsewhere.headers["location"] == f"/ui/worklist/north/{stat}"

    assert _rows(rad.get("/ui/worklist", params={"modality": "MR"}).text) == [routine]
    runtime.audit.flush()
    with runtime.sessions() as session:
        listed = session.scalars(
            select(AuditRow.detail)
            .where(AuditRow.action == "worklist.list", AuditRow.actor == "rad_north")
            .order_by(AuditRow.id)
        ).all()
    assert listed[-1] == {"query": {"modality": ["MR"]}, "results": 1}
    bad = rad.get("/ui/worklist", params={"study_date_from": "yesterday"})
    assert bad.status_code == 422 and 'id="worklist-error"' in bad.text


def test_the_study_page_keeps_notes_and_shows_why_an_action_was_refused(
    clients: Any, add_study
) -> None:
    study = add_study("north", PatientName="Note^Taker")
    page_url = f"/ui/worklist/north/{study}"
    added = clients("admin").post(
        f"{page_url}/notes", data={"text": "requisition <scanned>", "next": page_url}
    )
    assert added.status_code == 200  # followed back to the study's page
    assert "requisition &lt;scanned&gt;" in added.text  # escaped, never markup
    assert clients("rad_north").post(f"{page_url}/claim", follow_redirects=False).status_code == 303
    refused = clients("rad_south").get(page_url)
    assert refused.status_code == 404  # another facility's study: unknown
    taken = clients("admin").post(f"{page_url}/claim")
    assert taken.status_code == 403 and "only radiologist" in taken.text
    assigned = clients("admin").post(
        f"{page_url}/assign", data={"assignee": "ref_north", "next": page_url}
    )
    assert assigned.status_code == 422 and "only radiologists read studies" in assigned.text
    page = clients("admin").get(page_url).text
    assert '<dd id="study-assignee">rad_north</dd>' in page
    assert '<option value="rad_north" selected>rad_north</option>' in page
    cancelled = clients("admin").post(f"{page_url}/state", data={"state": "cancelled"})
    assert '<dd id="study-state">cancelled</dd>' in cancelled.text


def test_referring_physicians_and_strangers_do_not_get_the_worklist(clients: Any) -> None:
    assert clients("ref_north").get("/ui/worklist").status_code == 403
    anonymous = clients(None).get("/ui/worklist", follow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/login?next=%2Fui%2Fworklist"
    posted = clients(None).post("/ui/worklist/north/1.2.3/claim", follow_redirects=False)
    assert posted.status_code == 303 and posted.headers["location"].startswith("/login")


def test_a_critical_analysis_result_puts_the_study_on_top_with_its_results_counted(
    clients: Any, dw: Any, runtime: Runtime, tmp_path: Path, add_study
) -> None:
    """An AI node's SR declaring a critical finding: the worklist shows the study first (STAT,
    critical) with its result counted, in the API and on the page."""
    add_study("north", Priority.URGENT, PatientName="Waiting^Urgent")
    rad = clients("rad_north")
    study = dw.build_study(["explicit"], patient_name="Free^Air")
    report = an.sr(
        tmp_path,
        study.study_uid,
        an.container(an.CRITICAL_HEADING, an.text(an.FINDING, "Free air under the diaphragm")),
        PatientID=study.patient_id,
    )
    assert dw.stow(rad, [*study.files.values(), report.read_bytes()]).status_code == 200
    scan_arrivals(runtime)
    time.sleep(SETTLE_SECONDS)  # the results scan leaves instances younger than this
    assert scan_results(runtime) == 1

    first = rad.get("/api/worklist").json()["items"][0]
    assert first["study_instance_uid"] == study.study_uid
    assert (first["priority"], first["critical"]) == ("STAT", True)
    assert (first["results"], first["critical_result"]) == (1, True)
    page = rad.get("/ui/worklist").text
    assert _rows(page)[0] == study.study_uid
    assert '<td class="results">1 <span class="badge critical">critical</span></td>' in page
