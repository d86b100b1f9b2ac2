"""The whole reading day in headless Chromium against a real `noctis serve` (issue 15's
headline check).

An administrator declares facilities north and south (`noctis facility apply`) and creates
the day's users and a CT report template over REST. A technologist schedules a STAT CT on
`/ui/orders`; the modality (dcmtk ``findscu -W``) finds it on the Modality Worklist, reports
MPPS in progress (pynetdicom), sends the study (``storescu``) with the answer's Study
Instance UID, accession and patient, then MPPS completed. The radiologist finds it at the top
of `/ui/worklist` as STAT, claims it, sees it in OHIF, comes back, writes the report from the
template and signs it; the day's in-app notifications reach whom they should. The referring
physician of north reads the PDF (``pdftotext``); the one of south sees nothing of it. The
report's Encapsulated PDF comes back over WADO-RS and C-GET byte for byte.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import requests
import yaml
from dicomweb_client.api import DICOMwebClient
from playwright.sync_api import Browser, Page
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE

from noctis.api.viewer import default_viewer_dir
from noctis.api.web.notifications import KIND_LABELS
from noctis.scp.contexts import MODALITY_PERFORMED_PROCEDURE_STEP as MPPS
from support import dcmtk, wait
from support.dicomdata import generate_ct_series
from support.logs import ServerLogs
from support.ports import LOOPBACK
from support.serve import ADMIN_PASSWORD, EmbeddedServe
from support.viewer_page import viewer_page, wait_for_image
from support.web import login

pytestmark = [pytest.mark.browser, pytest.mark.dcmtk]

MODALITY = "CT_NORTH"
READER = "PACS_VIEW"  # a workstation of north that retrieves with C-GET
NORTH_NAME = "North General Hospital"
ACCESSION = "ACC-DAY-0001"
PATIENT_ID = "DAY-0001"
PATIENT_NAME = "Dawn^Ada"
TEMPLATE = "FINDINGS:\n\nIMPRESSION:"
TYPED = " No acute intracranial finding."
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}
USERS = {  # username: (role, facility)
    "tech.north": ("technologist", "north"),
    "dr.north": ("radiologist", "north"),
    "ref.north": ("referring-physician", "north"),
    "ref.south": ("referring-physician", "south"),
}


@dataclass(frozen=True)
class Day:
    serve: EmbeddedServe
    admin: httpx.Client
    passwords: dict[str, str]
    workdir: Path

    @property
    def base(self) -> str:
        return self.serve.base_url


def _noctis(*args: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "noctis.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _declare_facilities(serve: EmbeddedServe, directory: Path) -> None:
    """What an administrator applies: north with its CT and a reading workstation, south."""
    loopback = ["127.0.0.0/8"]
    facilities = {
        "north": {
            "displayName": NORTH_NAME,
            "applicationEntities": [
                {
                    "aeTitle": MODALITY,
                    "allowedCIDRs": loopback,
                    "services": ["store", "worklist", "mpps", "find"],
                },
                {"aeTitle": READER, "allowedCIDRs": loopback, "services": ["find", "get"]},
            ],
        },
        "south": {
            "displayName": "South Clinic",
            "applicationEntities": [{"aeTitle": "CT_SOUTH", "allowedCIDRs": loopback}],
        },
    }
    for name, spec in facilities.items():
        path = directory / f"{name}.yaml"
        document = {
            "apiVersion": "pacs.noctis.io/v1alpha1",
            "kind": "Facility",
            "metadata": {"name": name},
            "spec": spec,
        }
        path.write_text(yaml.safe_dump(document))
        _noctis("facility", "apply", "-f", str(path), env=serve.env)


@pytest.fixture
def day(tmp_path: Path, server_logs: ServerLogs) -> Iterator[Day]:
    viewer_dir = default_viewer_dir()
    if not (viewer_dir / "index.html").is_file():
        pytest.fail(f"OHIF is not fetched into {viewer_dir}: run scripts/fetch-viewer.sh")
    settings = {
        "NOCTIS_VIEWER_DIR": str(viewer_dir),
        "NOCTIS_WORKFLOW_SCAN_SECONDS": "0.2",
        "NOCTIS_ORDER_LINK_SECONDS": "0.2",
        "NOCTIS_STABLE_AFTER_SECONDS": "2",
        "NOCTIS_STABLE_SWEEP_SECONDS": "0.5",
        "NOCTIS_NOTIFY_TICK_SECONDS": "0.2",
    }
    serve = EmbeddedServe(tmp_path, server_logs, settings)
    serve.data_dir.mkdir()
    _noctis("migrate", env=serve.env)
    _declare_facilities(serve, tmp_path)
    with serve, httpx.Client(base_url=serve.base_url, headers=SAME_ORIGIN, timeout=30) as admin:
        login(admin, "admin", ADMIN_PASSWORD)
        passwords = {}
        for username, (role, facility) in USERS.items():
            password = f"{username}-password-0123"
            made = admin.post(
                "/api/users",
                json={
                    "username": username,
                    "role": role,
                    "password": password,
                    "facilities": [facility],
                },
            )
            assert made.status_code == 201, made.text
            passwords[username] = password
        template = {"name": "CT head", "modality": "CT", "text": TEMPLATE}
        made = admin.post("/api/report-templates", json=template)
        assert made.status_code == 201, made.text
        yield Day(serve, admin, passwords, tmp_path)


def _sign_in(page: Page, day: Day, username: str, path: str, lands: str = "") -> None:
    page.goto(f"{day.base}{path}")
    assert page.url.startswith(f"{day.base}/login")
    page.fill("#username", username)
    page.fill("#password", day.passwords[username])
    page.click("#sign-in")
    page.wait_for_url(f"{day.base}{lands or path}")


def _store(day: Day, name: str, **identity: str) -> list[Path]:
    """A small CT series (a phantom OHIF can show) with the given identity, sent by the
    modality with storescu."""
    files = generate_ct_series(
        day.workdir / name,
        slices=6,
        size=128,
        patient_id=identity["PatientID"],
        patient_name=identity["PatientName"],
        study_instance_uid=identity["StudyInstanceUID"],
    )
    for path in files:
        ds = dcmread(path)
        for keyword, value in identity.items():
            setattr(ds, keyword, value)
        ds.save_as(path)
    sent = dcmtk.storescu(day.serve.port, files, calling=MODALITY, called="NOCTIS")
    assert sent.ok, sent.output
    return files


def _worklist_row(day: Day, study_uid: str) -> dict | None:
    found = day.admin.get(f"/api/worklist/north/{study_uid}")
    return found.json() if found.status_code == 200 else None


def _technologist_orders(chromium: Browser, day: Day, artifacts: Path) -> str:
    """The order's id, scheduled STAT for today on the CT through the orders page."""
    context = chromium.new_context()
    page = context.new_page()
    _sign_in(page, day, "tech.north", "/ui/orders")
    form = page.locator("form.order-form")
    form.locator("input[name=accession_number]").fill(ACCESSION)
    form.locator("input[name=patient_id]").fill(PATIENT_ID)
    form.locator("input[name=patient_name]").fill(PATIENT_NAME)
    form.locator("input[name=patient_birth_date]").fill("19800214")
    form.locator("input[name=requested_procedure_description]").fill("CT head")
    form.locator("input[name=modality]").fill("CT")
    form.locator("input[name=scheduled_station_ae_title]").fill(MODALITY)
    form.locator("input[name=scheduled_date]").fill(dt.datetime.now(dt.UTC).strftime("%Y%m%d"))
    form.locator("input[name=scheduled_time]").fill("0800")
    form.locator("select[name=priority]").select_option("stat")
    form.locator("button[type=submit]").click()
    page.wait_for_load_state()
    row = page.locator("table.orders tr[data-order]", has_text=ACCESSION)
    row.wait_for()
    assert row.locator(".badge").inner_text() == "STAT"
    assert row.locator("td.status").inner_text() == "scheduled"
    page.screenshot(path=str(artifacts / "day-1-order.png"), full_page=True)
    order_id = row.get_attribute("data-order")
    context.close()
    assert order_id
    return order_id


def _modality_worklist(day: Day) -> Dataset:
    out = day.workdir / "mwl"
    out.mkdir()
    keys = [
        "PatientName",
        "PatientID",
        "AccessionNumber",
        "StudyInstanceUID",
        "RequestedProcedurePriority",
        f"(0040,0100)[0].ScheduledStationAETitle={MODALITY}",
        "(0040,0100)[0].Modality=CT",
        "(0040,0100)[0].ScheduledProcedureStepStartDate",
        "(0040,0100)[0].ScheduledProcedureStepID",
    ]
    args = ["-v", "-W", "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    args += ["-aet", MODALITY, "-aec", "NOCTIS", LOOPBACK, str(day.serve.port)]
    result = dcmtk.run_tool("findscu", args)
    assert result.ok, result.output
    answers = [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    assert len(answers) == 1, result.output
    return answers[0]


def _mpps(association, dataset: Dataset, uid: str, *, create: bool) -> None:
    if create:
        status, _ = association.send_n_create(dataset, MPPS, uid)
    else:
        status, _ = association.send_n_set(dataset, MPPS, uid)
    assert status.Status == 0x0000, status


def _the_modality_performs(day: Day, order_id: str) -> str:
    """The study UID the worklist gave, the exam performed and sent."""
    answer = _modality_worklist(day)
    assert answer.AccessionNumber == ACCESSION
    assert str(answer.PatientName) == PATIENT_NAME and answer.PatientID == PATIENT_ID
    assert answer.RequestedProcedurePriority == "STAT"
    study_uid = str(answer.StudyInstanceUID)

    ae = AE(ae_title=MODALITY)
    ae.add_requested_context(MPPS)
    mpps = ae.associate(LOOPBACK, day.serve.port, ae_title="NOCTIS")
    assert mpps.is_established
    step_uid = generate_uid()
    try:
        started = Dataset()
        started.PerformedProcedureStepStatus = "IN PROGRESS"
        started.PerformedProcedureStepID = "PPS-DAY-1"
        started.PerformedProcedureStepStartDate = dt.date.today().strftime("%Y%m%d")
        started.PerformedProcedureStepStartTime = "081500"
        started.PerformedStationAETitle = MODALITY
        started.Modality = "CT"
        started.PatientID = PATIENT_ID
        started.PatientName = PATIENT_NAME
        scheduled = Dataset()
        scheduled.StudyInstanceUID = study_uid
        scheduled.AccessionNumber = ACCESSION
        scheduled.ScheduledProcedureStepID = answer.ScheduledProcedureStepSequence[
            0
        ].ScheduledProcedureStepID
        started.ScheduledStepAttributesSequence = [scheduled]
        _mpps(mpps, started, step_uid, create=True)
        assert day.admin.get(f"/api/orders/{order_id}").json()["status"] == "in-progress"

        _store(
            day,
            "exam",
            StudyInstanceUID=study_uid,
            AccessionNumber=ACCESSION,
            PatientID=PATIENT_ID,
            PatientName=PATIENT_NAME,
            StudyDescription="CT head",
        )

        done = Dataset()
        done.PerformedProcedureStepStatus = "COMPLETED"
        done.PerformedProcedureStepEndDate = started.PerformedProcedureStepStartDate
        done.PerformedProcedureStepEndTime = "083000"
        _mpps(mpps, done, step_uid, create=False)
    finally:
        mpps.release()
    assert day.admin.get(f"/api/orders/{order_id}").json()["status"] == "completed"
    return study_uid


def _notifications(page: Page, day: Day, kinds: list[str], study_uid: str) -> None:
    """Wait until the in-app list (page and API) shows exactly these kinds, about the study."""
    labels = sorted(KIND_LABELS[kind] for kind in kinds)

    def shown() -> bool:
        page.goto(f"{day.base}/ui/notifications")
        rows = page.locator("tr.notification")
        return sorted(rows.locator(".badge").all_inner_texts()) == labels

    wait.until(shown, timeout=30, what=f"the in-app notifications {kinds}")
    for link in page.locator("tr.notification a").all():
        assert study_uid in (link.get_attribute("href") or "")
    api = page.request.get(f"{day.base}/api/notifications")
    assert api.ok
    items = api.json()["notifications"]
    assert sorted(item["kind"] for item in items) == sorted(kinds), items


def _pdf_text(pdf: bytes, workdir: Path) -> str:
    path = workdir / f"report-{time.monotonic_ns()}.pdf"
    path.write_bytes(pdf)
    done = subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True
    )
    return done.stdout


def _radiologist_reads(chromium: Browser, day: Day, study_uid: str, artifacts: Path) -> None:
    base = day.base
    with viewer_page(chromium, base) as (page, server_errors):
        _sign_in(page, day, "dr.north", "/ui/worklist")
        rows = page.locator("#worklist tbody tr.study")
        assert rows.count() == 2  # the routine study stored before, below
        first = rows.first
        assert first.get_attribute("data-study") == study_uid
        assert first.locator(".badge").first.inner_text() == "STAT"
        page.screenshot(path=str(artifacts / "day-2-worklist.png"), full_page=True)

        first.locator("button.claim").click()
        page.wait_for_load_state()
        row = page.locator(f'#worklist tr[data-study="{study_uid}"]')
        assert row.locator("td.assignee").inner_text() == "dr.north"
        assert row.locator("td.state").inner_text() == "in-reading"

        row.locator("a.view").click()
        page.wait_for_url(f"**/viewer?StudyInstanceUIDs={study_uid}")
        wait_for_image(page)
        page.screenshot(path=str(artifacts / "day-3-viewer.png"))
        page.locator("#noctis-worklist").click()
        page.wait_for_url(f"{base}/ui/worklist")

        page.locator(f'#worklist tr[data-study="{study_uid}"] a.report').click()
        page.wait_for_url(f"{base}/ui/reports/north/{study_uid}")
        page.select_option("#template-picker", label="CT head · CT")
        page.wait_for_selector("#save-status:has-text('Draft saved')")
        page.click("#report-text")
        page.keyboard.press("Control+End")
        page.keyboard.type(TYPED)
        api = f"{base}/api/studies/north/{study_uid}/report"
        page.wait_for_function(
            f"fetch('{api}').then(r => r.json()).then(j => j.draft === {TEMPLATE + TYPED!r})"
        )
        page.fill("fieldset.sign input[name=password]", day.passwords["dr.north"])
        page.click("fieldset.sign button[type=submit]")
        page.wait_for_selector("p.notice:has-text('Signed final')")
        page.screenshot(path=str(artifacts / "day-4-report-signed.png"), full_page=True)

        # STAT arrival told the radiologist; their own signature does not.
        _notifications(page, day, ["stat-arrived"], study_uid)
        page.screenshot(path=str(artifacts / "day-5-radiologist-notifications.png"))
        ours = [e for e in server_errors if "/ui/" in e or "/api/" in e]
        assert not ours, server_errors


def _referring_physicians_read(
    chromium: Browser, day: Day, study_uid: str, artifacts: Path
) -> bytes:
    """The final PDF as the referring physician of north reads it; south sees nothing."""
    report_page = f"/ui/reports/north/{study_uid}"
    north = chromium.new_context()
    page = north.new_page()
    # Home for a referring physician is the notifications; the report's one leads to it.
    _sign_in(page, day, "ref.north", "/ui", lands="/ui/notifications")
    _notifications(page, day, ["report-final"], study_uid)
    page.locator("tr.notification a.report").click()
    page.wait_for_url(f"{day.base}{report_page}")
    assert not page.locator('a[href="/ui/worklist"]').count()  # it would refuse them
    final = page.locator("section.report-final")
    assert TYPED.strip() in final.inner_text()
    pdf_link = final.locator("a").first.get_attribute("href")
    assert pdf_link
    response = page.request.get(f"{day.base}{pdf_link}")
    assert response.ok and response.headers["content-type"] == "application/pdf"
    pdf = response.body()
    text = _pdf_text(pdf, day.workdir)
    assert TYPED.strip() in text and NORTH_NAME in text, text
    page.screenshot(path=str(artifacts / "day-6-referring-north.png"), full_page=True)
    north.close()

    south = chromium.new_context()
    page = south.new_page()
    _sign_in(page, day, "ref.south", "/ui", lands="/ui/notifications")
    assert page.locator("p.empty").is_visible()
    assert page.request.get(f"{day.base}/api/notifications").json()["notifications"] == []
    refused = page.goto(f"{day.base}{report_page}")
    assert refused is not None and refused.status == 404
    assert TYPED.strip() not in page.content()
    assert page.request.get(f"{day.base}{pdf_link}").status == 404
    assert page.request.get(f"{day.base}/api/studies/north/{study_uid}/report").status == 404
    studies = page.request.get(f"{day.base}/dicom-web/studies")
    assert study_uid not in studies.text()
    page.screenshot(path=str(artifacts / "day-7-referring-south.png"), full_page=True)
    south.close()
    return pdf


def _report_in_the_study(day: Day, study_uid: str, pdf: bytes) -> None:
    """The Encapsulated PDF travels with the images: WADO-RS and C-GET give the bytes back."""
    made = day.admin.post("/api/tokens", json={"username": "admin", "name": "day"})
    assert made.status_code == 201, made.text
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {made.json()['token']}"
    client = DICOMwebClient(url=f"{day.base}/dicom-web", session=session)
    found = client.search_for_instances(
        study_instance_uid=study_uid, search_filters={"SOPClassUID": ENCAPSULATED_PDF}
    )
    assert len(found) == 1, found
    series_uid = found[0]["0020000E"]["Value"][0]
    sop_uid = found[0]["00080018"]["Value"][0]
    stored = client.retrieve_instance(study_uid, series_uid, sop_uid)
    assert stored.EncapsulatedDocument == pdf
    assert stored.AccessionNumber == ACCESSION and stored.PatientID == PATIENT_ID

    got = dcmtk.getscu(
        day.serve.port,
        {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid, "SOPInstanceUID": sop_uid},
        level="IMAGE",
        calling=READER,
        called="NOCTIS",
        output_dir=day.workdir / "c-get",
    )
    assert got.ok, got.output
    [received] = list((day.workdir / "c-get").iterdir())
    assert dcmread(received).EncapsulatedDocument == pdf


def test_the_reading_day(chromium: Browser, day: Day, artifacts: Path) -> None:
    _store(  # yesterday's routine study, still to be read
        day,
        "routine",
        StudyInstanceUID=generate_uid(),
        AccessionNumber="ACC-OLD-1",
        PatientID="OLD-0001",
        PatientName="Earlier^Eve",
    )
    order_id = _technologist_orders(chromium, day, artifacts)
    study_uid = _the_modality_performs(day, order_id)
    arrived = wait.until(
        lambda: (row := _worklist_row(day, study_uid)) and row["priority"] != "routine" and row,
        timeout=30,
        what="the study on the worklist, STAT from its order",
    )
    assert arrived["priority"] in ("stat", "STAT"), arrived
    _radiologist_reads(chromium, day, study_uid, artifacts)
    pdf = _referring_physicians_read(chromium, day, study_uid, artifacts)
    _report_in_the_study(day, study_uid, pdf)
    with httpx.Client(base_url=day.base, timeout=30) as technologist:
        login(technologist, "tech.north", day.passwords["tech.north"])
        # A technologist hears of nothing by default (they may opt in).
        assert technologist.get("/api/notifications").json()["notifications"] == []
    order = day.admin.get(f"/api/orders/{order_id}").json()
    assert (order["status"], order["study_linked"]) == ("completed", True)
    assert order["study_instance_uid"] == study_uid
    _the_day_is_audited(day, study_uid)


def _the_day_is_audited(day: Day, study_uid: str) -> None:
    """Who did what to the study, as the administrator reads it in the audit trail."""
    listed = day.admin.get("/api/audit", params={"study": study_uid, "limit": 500})
    assert listed.status_code == 200, listed.text
    done = {(event["actor"], event["action"]) for event in listed.json()["items"]}
    expected = {
        ("tech.north", "order"),  # scheduled
        (MODALITY, "mpps"),
        (MODALITY, "store"),
        ("noctis:orders", "workflow"),  # STAT from its order
        ("dr.north", "workflow"),  # claimed
        ("dr.north", "report"),  # signed
        ("ref.north", "retrieve"),  # the PDF read
        (READER, "retrieve"),  # C-GET
        ("admin", "wado.instance"),
    }
    assert expected <= done, sorted(expected - done)
