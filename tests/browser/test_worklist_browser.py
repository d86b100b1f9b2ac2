"""A radiologist's worklist in headless Chromium: log in, see the STAT study at the top, claim
it, open it in the OHIF viewer, and come back to the worklist from the viewer's header."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser
from sqlalchemy import select

from noctis.core.facilities import DEFAULT_FACILITY
from noctis.core.ingest import FacilityRef
from noctis.core.workflow import Actor, Priority, set_priority
from noctis.index.models import Facility, Study
from noctis.index.workflow import StudyWorkflow
from noctis.worker.arrival import scan_arrivals
from support.dicomdata import small_ct
from support.incoming import ingest_file
from support.viewer_page import viewer_page

from .conftest import LiveArchive

pytestmark = pytest.mark.browser


def _stat_study(live_archive: LiveArchive, directory: Path) -> str:
    """A CT study that arrived last and was made STAT (an order's priority, say)."""
    runtime = live_archive.app.state.runtime
    ds = small_ct(PatientName="Urgent^Case", PatientID="STAT001", StudyDescription="CT head")
    path = directory / "stat.dcm"
    ds.save_as(path, enforce_file_format=True)
    with runtime.sessions() as session:
        facility = session.scalars(select(Facility).where(Facility.name == DEFAULT_FACILITY)).one()
        ref = FacilityRef(facility.id, facility.name)
    ingest_file(runtime, ref, path)
    scan_arrivals(runtime)  # what each worker does every NOCTIS_WORKFLOW_SCAN_SECONDS
    with runtime.sessions.begin() as session:
        study = session.scalars(
            select(Study).where(Study.study_instance_uid == ds.StudyInstanceUID)
        ).one()
        set_priority(session, study, Priority.STAT, actor=Actor.system("orders"), reason="ED")
    return str(ds.StudyInstanceUID)


def test_a_radiologist_claims_the_stat_study_opens_it_and_comes_back(
    live_archive: LiveArchive, chromium: Browser, artifacts: Path, tmp_path: Path
) -> None:
    base = live_archive.base_url
    stat_uid = _stat_study(live_archive, tmp_path)
    ct_uid = live_archive.study.study_uid
    with viewer_page(chromium, base) as (page, server_errors):
        page.goto(f"{base}/ui/worklist")
        assert page.url.startswith(f"{base}/login")
        page.fill("#username", live_archive.username)
        page.fill("#password", live_archive.password)
        page.click("#sign-in")
        page.wait_for_url(f"{base}/ui/worklist")

        rows = page.locator("#worklist tbody tr.study")
        first = rows.first
        assert first.get_attribute("data-study") == stat_uid
        assert first.locator(".badge.stat").inner_text() == "STAT"
        assert rows.count() > 2  # every stored study is on the worklist, routine after STAT
        assert rows.nth(1).get_attribute("data-priority") == "routine"
        page.screenshot(path=str(artifacts / "worklist.png"))

        first.locator("button.claim").click()
        page.wait_for_load_state()
        first = page.locator(f'#worklist tr[data-study="{stat_uid}"]')
        assert first.locator("td.assignee").inner_text() == live_archive.username
        assert first.locator("td.state").inner_text() == "in-reading"
        assert first.locator("button.release").is_visible()

        # The CT study in the viewer, and back to the worklist from OHIF's header.
        page.locator(f'#worklist tr[data-study="{ct_uid}"] a.view').click()
        page.wait_for_url(f"**/viewer?StudyInstanceUIDs={ct_uid}")
        back = page.locator("#noctis-worklist")
        back.wait_for(timeout=90_000)
        page.screenshot(path=str(artifacts / "worklist-viewer.png"))
        back.click()
        page.wait_for_url(f"{base}/ui/worklist")
        assert page.locator("#worklist tbody tr.study").first.get_attribute("data-study") == (
            stat_uid
        )
        assert not [e for e in server_errors if "/ui/" in e or "/api/" in e], server_errors

    runtime = live_archive.app.state.runtime
    with runtime.sessions() as session:
        row = session.execute(
            select(StudyWorkflow.assignee, StudyWorkflow.state)
            .join(Study, Study.id == StudyWorkflow.study_pk)
            .where(Study.study_instance_uid == stat_uid)
        ).one()
    assert tuple(row) == (live_archive.username, "in-reading")
