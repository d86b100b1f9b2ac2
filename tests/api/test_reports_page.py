"""The report editor page: what a radiologist, a referring physician and someone of another
facility see, and signing through the plain HTML form (the text saved, then signed)."""

from __future__ import annotations

import re

import pytest

from support.web import TEST_PASSWORD_SUFFIX

TEXT = "FINDINGS:\nClear lungs.\n\nIMPRESSION: Normal."


@pytest.fixture
def study(clients, dw) -> str:
    built = dw.build_study(["explicit"], patient_name="Roe^Richard")
    assert dw.stow(clients("rad_north"), list(built.files.values())).status_code == 200
    return built.study_uid


def test_the_radiologist_writes_and_signs_on_the_page_and_the_referrer_reads_it(
    clients, study: str
) -> None:
    admin, rad, ref = clients("admin"), clients("rad_north"), clients("ref_north")
    admin.post(
        "/api/report-templates",
        json={"facility": "north", "name": "Chest CT", "modality": "CT", "text": TEXT},
    )
    admin.post("/api/report-snippets", json={"name": "No change", "text": "No interval change."})
    page_url = f"/ui/reports/north/{study}"
    page = rad.get(page_url)
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.text
    assert "Roe, Richard" in html and 'id="report-text"' in html
    assert f'data-draft-url="/api/studies/north/{study}/report/draft"' in html
    assert "Chest CT" in html and 'data-text="No interval change."' in html
    assert f'href="/viewer?StudyInstanceUIDs={study}"' in html and 'href="/ui/worklist"' in html
    assert '<script src="/ui/static/reports.js"' in html
    assert not re.search(r"<script>|<style>|\son[a-z]+=", html)  # nothing inline (CSP)
    assert ref.get(page_url).status_code == 404  # no final report yet

    wrong = rad.post(
        f"{page_url}/sign",
        data={"text": TEXT, "password": "nope", "state": "final"},
        follow_redirects=False,
    )
    assert wrong.status_code == 303 and "error=wrong%20password" in wrong.headers["location"]
    # The text was saved as the draft even though the password was wrong: nothing typed is lost.
    assert rad.get(f"/api/studies/north/{study}/report").json()["draft"] == TEXT
    signed = rad.post(
        f"{page_url}/sign",
        data={"text": TEXT, "password": "rad_north" + TEST_PASSWORD_SUFFIX, "state": "final"},
        follow_redirects=False,
    )
    assert signed.status_code == 303 and "message=Signed%20final" in signed.headers["location"]
    after = rad.get(page_url).text
    assert "Amend this report" in after and "/report/versions/1/pdf" in after

    read = ref.get(page_url)
    assert read.status_code == 200
    assert "Clear lungs." in read.text and 'id="report-text"' not in read.text
    assert "Amend" not in read.text and "/report/versions/1/pdf" in read.text
    assert clients("rad_south").get(page_url).status_code == 404
    anonymous = clients(None).get(page_url, follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")


def test_the_script_and_stylesheet_are_served(clients) -> None:
    anonymous = clients(None)
    assert (
        anonymous.get("/ui/static/reports.js").headers["content-type"].startswith("text/javascript")
    )
    assert anonymous.get("/ui/static/reports.css").status_code == 200
