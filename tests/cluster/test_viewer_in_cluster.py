"""The OHIF viewer through the API's Service, in headless Chromium: log in as the quickstart's
admin, find a CT sent through the DicomNode's LoadBalancer in the study list, open it and see
the image in the viewport (the canvas pixels)."""

from __future__ import annotations

import base64
import random
import string
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from browser.conftest import chromium  # noqa: F401  (the headless Chromium fixture)
from support import dcmtk
from support.cluster import chart
from support.cluster.cluster import Cluster
from support.dicomdata import generate_ct_series
from support.viewer_page import viewer_page, wait_for_image

pytestmark = [pytest.mark.browser, pytest.mark.dcmtk]


def test_the_viewer_through_the_api_service_shows_a_ct_sent_through_the_loadbalancer(
    cluster: Cluster,
    chromium: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    if not cluster.dicom or not cluster.web:
        pytest.fail("Noctis is not installed on the cluster (no images: scripts/build-images.sh)")
    host, port = cluster.dicom.rsplit(":", 1)
    family = "Cluster" + "".join(random.choices(string.ascii_uppercase, k=6))  # this run's
    series = generate_ct_series(
        tmp_path / "ct", slices=20, patient_id=f"VIEWER-{family}", patient_name=f"{family}^Viewer"
    )
    stored = dcmtk.storescu(int(port), series, calling="VIEWER_CT", called="NOCTIS", host=host)
    assert stored.ok, stored.output[-2000:]
    secret = cluster.kubectl_json("get", "secret", "-n", chart.NAMESPACE, "noctis-admin")
    password = base64.b64decode(secret["data"]["password"]).decode()

    base = cluster.web
    with viewer_page(chromium, base) as (page, server_errors):
        page.goto(f"{base}/")
        assert page.url == f"{base}/login?next=%2F"
        page.fill("#username", "admin")
        page.fill("#password", password)
        page.click("#sign-in")
        page.wait_for_url(f"{base}/")
        row = page.get_by_text(f"{family}, Viewer")
        row.wait_for(timeout=60_000)
        row.click()
        page.get_by_role("button", name="Basic Viewer").click()
        page.wait_for_url("**/viewer?**")
        stats = wait_for_image(page)
        page.screenshot(path=str(tmp_path / "ohif-cluster-ct.png"))
    assert stats["std"] > 20 and stats["levels"] > 16, stats
    assert not server_errors, server_errors
