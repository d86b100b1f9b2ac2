"""The report editor in headless Chromium: a radiologist picks a template, types (the draft is
saved while typing, with no button), inserts a snippet, signs with the password; the referring
physician of the facility opens the final PDF. The page runs under its Content-Security-Policy
without one violation (no inline script or style)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page

from noctis.api.app import create_app
from noctis.core.facilities import DEFAULT_FACILITY
from noctis.core.ingest import FacilityRef
from noctis.core.runtime import Runtime
from noctis.index.models import Facility
from support.archive import embedded_settings, open_runtime
from support.dicomdata import small_ct
from support.incoming import ingest_file
from support.web import create_user, running

pytestmark = pytest.mark.browser

RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener('securitypolicyviolation', event => {
  window.cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""
TEMPLATE = "FINDINGS:\n\nIMPRESSION:"


@dataclass(frozen=True)
class Site:
    base_url: str
    study_uid: str
    passwords: dict[str, str]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    runtime: Runtime = open_runtime(embedded_settings(tmp_path), default_facility=True)
    ds = small_ct(PatientName="Chrome^Carla", AccessionNumber="ACC-UI-1")
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    with runtime.sessions() as session:
        facility = session.query(Facility).filter_by(name=DEFAULT_FACILITY).one()
        ref = FacilityRef(facility.id, facility.name)
    ingest_file(runtime, ref, path)
    passwords = {
        "dr.reads": create_user(runtime, "dr.reads", "radiologist", [DEFAULT_FACILITY]),
        "dr.refers": create_user(runtime, "dr.refers", "referring-physician", [DEFAULT_FACILITY]),
        "boss": create_user(runtime, "boss", "admin", []),
    }
    app = create_app(runtime.settings, runtime)
    try:
        with running(app) as base_url:
            boss = httpx.Client(base_url=base_url)
            boss.post(
                "/login",
                data={"username": "boss", "password": passwords["boss"], "next": "/"},
            )
            made = boss.post(
                "/api/report-templates",
                json={"name": "CT normal", "modality": "CT", "text": TEMPLATE},
                headers={"Sec-Fetch-Site": "same-origin"},
            )
            assert made.status_code == 201, made.text
            boss.post(
                "/api/report-snippets",
                json={"name": "Normal", "text": "No abnormality."},
                headers={"Sec-Fetch-Site": "same-origin"},
            )
            yield Site(base_url, str(ds.StudyInstanceUID), passwords)
    finally:
        runtime.close()


def _sign_in(page: Page, site: Site, username: str, next_url: str) -> None:
    page.goto(f"{site.base_url}{next_url}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", site.passwords[username])
    page.click("button[type=submit]")
    page.wait_for_url(f"**{next_url}")


def test_a_report_is_written_autosaved_signed_and_read(
    chromium: Browser, site: Site, artifacts: Path
) -> None:
    url = f"/ui/reports/{DEFAULT_FACILITY}/{site.study_uid}"
    reader = chromium.new_context()
    page = reader.new_page()
    page.add_init_script(RECORD_VIOLATIONS)
    _sign_in(page, site, "dr.reads", url)
    page.select_option("#template-picker", label="CT normal · CT")
    page.wait_for_selector("#save-status:has-text('Draft saved')")
    page.click("#report-text")
    page.keyboard.press("Control+End")
    page.keyboard.type(" Clear lungs.")
    page.wait_for_function(
        "document.getElementById('save-status').textContent.startsWith('Draft saved')"
        " && !document.getElementById('save-status').classList.contains('failed')"
    )
    page.click("button.snippet:has-text('Normal')")
    expected = TEMPLATE + " Clear lungs.No abnormality."
    # The draft on the server follows what was typed, without any button pressed.
    api = f"{site.base_url}/api/studies/{DEFAULT_FACILITY}/{site.study_uid}/report"
    page.wait_for_function(
        f"fetch('{api}').then(r => r.json()).then(j => j.draft === {expected!r})"
    )
    page.fill("input[name=password]", site.passwords["dr.reads"])
    page.click("fieldset.sign button[type=submit]")
    page.wait_for_selector("p.notice:has-text('Signed final')")
    assert page.locator("tr.version").count() == 1
    assert page.evaluate("window.cspViolations") == []
    page.screenshot(path=str(artifacts / "report-editor.png"), full_page=True)
    reader.close()

    referrer = chromium.new_context()
    page = referrer.new_page()
    _sign_in(page, site, "dr.refers", url)
    assert "No abnormality." in page.inner_text("section.report-final")
    link = page.get_attribute("section.report-final a", "href")
    response = page.request.get(f"{site.base_url}{link}")
    assert response.ok and response.headers["content-type"] == "application/pdf"
    assert response.body().startswith(b"%PDF-")
    referrer.close()
