"""The whole path a radiologist takes: log in, find the study in OHIF's study list, open it,
and see the CT image in the viewport (the canvas pixels, not just the DOM)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Response
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from sqlalchemy import select

from noctis.index.accounts import AuditRow
from support.archive import embedded_settings, open_runtime
from support.viewer_page import viewer_page, wait_for_image

from .conftest import LiveArchive

pytestmark = pytest.mark.browser


def _study_search(response: Response) -> bool:
    return "/dicom-web/studies?" in response.url and response.request.method == "GET"


def _visible_soon(locator: Any, seconds: float = 10.0) -> bool:
    try:
        locator.wait_for(timeout=seconds * 1000)
    except PlaywrightTimeout:
        return False
    return True


def test_login_study_list_and_ct_in_the_viewer(
    live_archive: LiveArchive, chromium: Browser, artifacts: Path
) -> None:
    base, study = live_archive.base_url, live_archive.study
    with viewer_page(chromium, base) as (page, server_errors):
        # Not logged in: the viewer sends the browser to the login page.
        page.goto(f"{base}/")
        assert page.url == f"{base}/login?next=%2F"
        page.fill("#username", live_archive.username)
        page.fill("#password", live_archive.password)
        started = time.monotonic()
        # OHIF's study list, filled by QIDO-RS through the session cookie, with every
        # study the archive accepted of pydicom's test files and the conformance set: one
        # odd study (no Modality, say) must not turn the list into an error.
        with page.expect_response(_study_search, timeout=60_000) as searched:
            page.click("#sign-in")
            page.wait_for_url(f"{base}/")
        listed = searched.value.json()
        assert len(listed) == min(101, live_archive.sample_studies + 1), len(listed)
        row = page.get_by_text("Browser, Test")
        if not _visible_soon(row):  # on a later page of the list: filter by the name
            page.get_by_placeholder("Patient Name").fill("Browser")
        row.wait_for(timeout=60_000)
        list_seconds = time.monotonic() - started
        assert not page.get_by_text("Data Source Connection Error").is_visible()
        assert page.get_by_text("CT phantom for the viewer test").is_visible()
        page.screenshot(path=str(artifacts / "ohif-study-list.png"))

        # Open the study in the basic viewer.
        row.click()
        opened = time.monotonic()
        page.get_by_role("button", name="Basic Viewer").click()
        page.wait_for_url(f"**/viewer?**StudyInstanceUIDs={study.study_uid}**")
        stats = wait_for_image(page)
        viewer_seconds = time.monotonic() - opened
        page.screenshot(path=str(artifacts / "ohif-viewer-ct.png"))
        page.locator("canvas.cornerstone-canvas").first.screenshot(
            path=str(artifacts / "ohif-viewport-ct.png")
        )

    timings = {
        "login_to_study_list_s": round(list_seconds, 2),
        "open_study_to_image_s": round(viewer_seconds, 2),
        "canvas": stats,
    }
    (artifacts / "viewer-timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(f"\nviewer timings: {timings}")

    # An image, windowed as the header asks (W 400 / L 40): air black, the bone ring white,
    # soft tissue mid-grey; not a blank or uniform canvas.
    assert stats["std"] > 20 and stats["levels"] > 16, stats
    assert stats["dark"] > 0.10, stats
    assert stats["bright"] > 0.01, stats
    assert stats["mid"] > 0.10, stats
    assert not server_errors, server_errors


def test_viewer_reads_are_in_the_audit_trail(live_archive: LiveArchive) -> None:
    """Runs after the viewer test: what the browser read was recorded as dr.house's."""
    assert live_archive.app.state.audit.flush()
    root = Path(live_archive.data_dir)
    runtime = open_runtime(embedded_settings(root), default_facility=True)
    try:
        with runtime.sessions() as session:
            events = session.scalars(
                select(AuditRow).where(AuditRow.actor == live_archive.username)
            ).all()
    finally:
        runtime.close()
    actions = {e.action for e in events}
    assert "login" in actions
    read = [e for e in events if e.study_instance_uid == live_archive.study.study_uid]
    assert read and all(e.outcome == "success" for e in read), actions
