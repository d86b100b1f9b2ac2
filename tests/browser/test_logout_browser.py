"""Signing out from inside OHIF: the Sign out control in OHIF's header (study list and
viewer) posts to /logout, the browser lands on the login page, and the session is over on
the server too. On the way OHIF runs under the viewer's Content-Security-Policy without one
violation and shows a JPEG 2000 image: decoded by OpenJPEG compiled to WebAssembly, in a
web worker, so the policy's 'wasm-unsafe-eval' and worker sources are what make it work."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from noctis.core.facilities import DEFAULT_FACILITY
from noctis.core.ingest import FacilityRef
from noctis.index.models import Facility
from support.incoming import ingest_file

from .conftest import LiveArchive

pytestmark = pytest.mark.browser

# Every violation the page reports, kept where the test can read it.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener('securitypolicyviolation', event => {
  window.cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""
# True once the viewport canvas shows a non-uniform picture (the CT, not a blank canvas).
IMAGE_SHOWN = """
() => {
  const canvas = document.querySelector('canvas.cornerstone-canvas');
  if (!canvas || !canvas.width) return false;
  const data = canvas.getContext('2d', {willReadFrequently: true})
    .getImageData(0, 0, canvas.width, canvas.height).data;
  let sum = 0, sum2 = 0;
  for (let i = 0; i < data.length; i += 4) { sum += data[i]; sum2 += data[i] * data[i]; }
  const n = data.length / 4, mean = sum / n;
  return Math.sqrt(Math.max(0, sum2 / n - mean * mean)) > 20;
}
"""


def store_jpeg2000_study(live_archive: LiveArchive, directory: Path) -> str:
    """pydicom's JPEG 2000 MR as a study of its own; its Study Instance UID."""
    ds = dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID = "Codec^Check", "CODEC001"
    path = directory / "jpeg2000.dcm"
    ds.save_as(path, enforce_file_format=True)
    runtime = live_archive.app.state.runtime
    with runtime.sessions() as session:
        facility = session.query(Facility).filter_by(name=DEFAULT_FACILITY).one()
        ref = FacilityRef(facility.id, facility.name)
    ingest_file(runtime, ref, path)
    return str(ds.StudyInstanceUID)


def test_sign_out_from_the_viewer_ends_the_session(
    live_archive: LiveArchive, chromium: Browser, tmp_path: Path
) -> None:
    base = live_archive.base_url
    study_uid = store_jpeg2000_study(live_archive, tmp_path)
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    refused: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            refused.append(message.text)

    page.on("console", on_console)
    try:
        page.goto(f"{base}/")
        page.fill("#username", live_archive.username)
        page.fill("#password", live_archive.password)
        page.click("#sign-in")
        page.wait_for_url(f"{base}/")
        row = page.get_by_text("Codec, Check")
        row.wait_for(timeout=60_000)
        assert page.locator("#noctis-sign-out").is_visible()  # on the study list

        row.click()
        page.get_by_role("button", name="Basic Viewer").click()
        page.wait_for_url(f"**/viewer?**StudyInstanceUIDs={study_uid}**")
        page.wait_for_function(IMAGE_SHOWN, timeout=90_000)
        cookie = next(c for c in context.cookies() if c["name"] == "noctis_session")
        violations = page.evaluate("window.cspViolations")

        page.locator("#noctis-sign-out").click()
        page.wait_for_url(f"{base}/login")
        assert page.locator("#sign-in").is_visible()
    finally:
        context.close()

    assert not violations and not refused, (violations, refused)
    old_cookie = httpx.get(f"{base}/api/me", cookies={cookie["name"]: cookie["value"]})
    assert old_cookie.status_code == 401  # ended on the server, not only forgotten
