"""Reports over REST as radiologists, referring physicians and administrators meet them:
templates, a draft autosaved, signing with the password again (the login's lockout), the
final PDF read by a referring physician of the facility and nobody else, the PDF stored in
the study and retrieved over WADO-RS byte for byte, attachments, and the audit trail."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from noctis.core.runtime import Runtime
from noctis.dicom.documents import encapsulated_document
from noctis.index import accounts
from support.web import TEST_PASSWORD_SUFFIX, client_for, create_user, token_for

TEXT = "FINDINGS:\nNo acute abnormality.\n\nIMPRESSION: Normal chest."
PASSWORD = "rad_north" + TEST_PASSWORD_SUFFIX


@pytest.fixture
def study(clients, dw) -> str:
    built = dw.build_study(["explicit"], AccessionNumber="ACC42")
    assert dw.stow(clients("rad_north"), list(built.files.values())).status_code == 200
    return built.study_uid


def _pdf_text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "got.pdf"
    path.write_bytes(pdf)
    result = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _audit(runtime: Runtime, action: str) -> list[tuple[str, str, dict]]:
    runtime.audit.flush()
    with runtime.reader() as session:
        rows = session.execute(
            select(accounts.AuditRow.actor, accounts.AuditRow.outcome, accounts.AuditRow.detail)
            .where(accounts.AuditRow.action == action)
            .order_by(accounts.AuditRow.id)
        ).all()
    return [(a, o, d or {}) for a, o, d in rows]


def test_a_radiologist_writes_from_a_template_signs_and_the_referrer_reads_the_pdf(
    clients, dw, runtime: Runtime, study: str, tmp_path: Path
) -> None:
    admin, rad, ref = clients("admin"), clients("rad_north"), clients("ref_north")
    made = admin.post(
        "/api/report-templates",
        json={"facility": "north", "name": "CT chest", "modality": "ct", "text": TEXT},
    )
    assert made.status_code == 201, made.text
    assert admin.post("/api/report-snippets", json={"name": "normal", "text": "Normal."}).is_success
    listed = rad.get("/api/report-templates", params={"modality": "CT"}).json()
    assert [t["name"] for t in listed] == ["CT chest"]
    assert rad.get("/api/report-templates", params={"modality": "MR"}).json() == []
    assert [s["text"] for s in rad.get("/api/report-snippets").json()] == ["Normal."]

    url = f"/api/studies/north/{study}/report"
    draft = rad.put(f"{url}/draft", json={"text": "FINDINGS:", "template_id": made.json()["id"]})
    assert draft.status_code == 200, draft.text
    draft = rad.put(f"{url}/draft", json={"text": TEXT}).json()
    assert (draft["state"], draft["draft"], draft["versions"]) == ("draft", TEXT, [])
    assert ref.get(url).status_code == 404  # nothing final yet: as if there were no report

    assert rad.post(f"{url}/sign", json={"state": "signed", "password": "x"}).status_code == 422
    wrong = rad.post(f"{url}/sign", json={"state": "final", "password": "guess"})
    assert (wrong.status_code, wrong.json()["detail"]) == (403, "wrong password")
    signed = rad.post(
        f"{url}/sign",
        json={"state": "final", "password": PASSWORD, "text_sha256": draft["draft_sha256"]},
    )
    assert signed.status_code == 200, signed.text
    report = signed.json()
    assert report["state"] == "final" and report["draft"] is None
    (version,) = report["versions"]
    assert (version["number"], version["signed_by"], version["documents_stored"]) == (
        1,
        "rad_north",
        True,
    )
    # The referring physician of the facility reads the final report and its PDF.
    seen = ref.get(url).json()
    assert seen["draft"] is None and [v["state"] for v in seen["versions"]] == ["final"]
    pdf = ref.get(version["pdf_url"])
    assert pdf.headers["content-type"] == "application/pdf"
    text = _pdf_text(pdf.content, tmp_path)
    assert "FINAL REPORT" in text and "No acute abnormality." in text and "North" in text
    assert "ACC42" in text and "Signed final by rad_north" in text
    # The same PDF is in the study, byte for byte, for any DICOMweb client.
    instance = admin.get(
        f"/dicom-web/studies/{study}/series/{_series_of(admin, study, 'DOC')}/instances/"
        f"{version['pdf_sop_instance_uid']}",
        headers={"Accept": 'multipart/related; type="application/dicom"'},
    )
    assert instance.status_code == 200
    ((_, part),) = dw.split_multipart(instance)
    ds = dcmread(io.BytesIO(part))
    assert bytes(ds.EncapsulatedDocument) == pdf.content == encapsulated_document(ds)
    assert ds.EncapsulatedDocumentLength == len(pdf.content) and len(pdf.content) % 2 == 0
    # ... and as bulk data, the URI the instance's metadata gives for Encapsulated Document.
    instance_url = instance.request.url.path
    metadata = admin.get(f"{instance_url}/metadata").json()[0]
    bulk = admin.get(
        metadata["00420011"]["BulkDataURI"],
        headers={"Accept": "multipart/related; type=application/octet-stream"},
    )
    assert bulk.status_code == 200, bulk.text
    ((_, value),) = dw.split_multipart(bulk)
    assert value == pdf.content

    # Who signed, and the refused attempt, are in the audit trail.
    trail = _audit(runtime, "report")
    assert ("rad_north", "denied", "wrong password") in [
        (a, o, d.get("reason")) for a, o, d in trail
    ]
    assert [(a, d["change"], d.get("text_sha256")) for a, o, d in trail if o == "success"] == [
        ("rad_north", "signed", version["text_sha256"])
    ]
    assert {d["operation"] for _, _, d in _audit(runtime, "report-library")} == {"create"}
    reads = [(a, d.get("report")) for a, o, d in _audit(runtime, "retrieve") if o == "success"]
    assert ("ref_north", True) in reads


def _series_of(client, study: str, modality: str) -> str:
    series = client.get(f"/dicom-web/studies/{study}/series", params={"Modality": modality})
    assert series.status_code == 200, series.text
    (found,) = series.json()
    return found["0020000E"]["Value"][0]


def test_other_facilities_and_roles_are_refused_on_every_route(
    clients, app, runtime: Runtime, study: str
) -> None:
    rad, south, ref, admin = (
        clients("rad_north"),
        clients("rad_south"),
        clients("ref_north"),
        clients("admin"),
    )
    url = f"/api/studies/north/{study}/report"
    assert rad.put(f"{url}/draft", json={"text": TEXT}).status_code == 200
    for method, path, body in [
        ("GET", url, None),
        ("PUT", f"{url}/draft", {"text": "x"}),
        ("POST", f"{url}/sign", {"state": "final", "password": "x"}),
        ("POST", f"{url}/amend", None),
        ("GET", f"{url}/versions", None),
        ("GET", f"{url}/versions/1/pdf", None),
        ("GET", f"/api/studies/north/{study}/attachments", None),
    ]:
        assert south.request(method, path, json=body).status_code == 404, (method, path)
        assert clients(None).request(method, path, json=body).status_code == 401, path
    assert ref.put(f"{url}/draft", json={"text": "x"}).status_code == 403
    assert ref.post(f"{url}/sign", json={"state": "final", "password": "x"}).status_code == 403
    assert admin.put(f"{url}/draft", json={"text": "x"}).status_code == 403  # never signs
    assert ref.get(f"{url}/versions").status_code == 404
    # Another radiologist of the facility may not write the study rad_north is reading.
    create_user(runtime, "rad_north2", "radiologist", ["north"])
    other = client_for(app, token_for(runtime, "rad_north2"))
    refused = other.put(f"{url}/draft", json={"text": "mine"})
    assert (refused.status_code, refused.json()["detail"]) == (
        403,
        "the study is being read by rad_north",
    )
    # Technologists manage attachments but read no reports.
    create_user(runtime, "tech_north", "technologist", ["north"])
    tech = client_for(app, token_for(runtime, "tech_north"))
    assert tech.get(url).status_code == 403
    assert tech.get(f"{url}/versions/1/pdf").status_code == 403
    attached = tech.post(
        f"/api/studies/north/{study}/attachments",
        files={"file": ("req.pdf", b"%PDF-1.4\n%%EOF\n", "application/pdf")},
    )
    assert attached.status_code == 201
    page = tech.get(f"/ui/reports/north/{study}")
    assert (
        page.status_code == 200 and "req.pdf" in page.text and 'id="report-text"' not in page.text
    )
    # Templates: radiologists read, administrators write; other facilities' are hidden.
    made = admin.post(
        "/api/report-templates", json={"facility": "south", "name": "S", "text": "t"}
    ).json()
    assert rad.get(f"/api/report-templates/{made['id']}").status_code == 404
    assert rad.post("/api/report-templates", json={"name": "mine", "text": "t"}).status_code == 403
    assert ref.get("/api/report-templates").status_code == 403


def test_signing_counts_against_the_login_lockout(clients, study: str) -> None:
    rad = clients("rad_north")
    url = f"/api/studies/north/{study}/report"
    assert rad.put(f"{url}/draft", json={"text": TEXT}).status_code == 200
    codes = [
        rad.post(f"{url}/sign", json={"state": "final", "password": "bad"}).status_code
        for _ in range(6)
    ]
    assert codes == [403] * 5 + [429]
    # Locked out: even the right password waits, and nothing was signed.
    locked = rad.post(f"{url}/sign", json={"state": "final", "password": PASSWORD})
    assert locked.status_code == 429 and "Retry-After" in locked.headers
    assert rad.get(url).json()["versions"] == []


def test_amending_a_final_report_keeps_the_earlier_version_and_marks_the_pdf(
    clients, study: str, tmp_path: Path
) -> None:
    rad, ref = clients("rad_north"), clients("ref_north")
    url = f"/api/studies/north/{study}/report"
    rad.put(f"{url}/draft", json={"text": TEXT})
    assert rad.post(f"{url}/sign", json={"state": "final", "password": PASSWORD}).is_success
    assert rad.put(f"{url}/draft", json={"text": "x"}).status_code == 409  # amend first
    opened = rad.post(f"{url}/amend").json()
    assert opened["draft"] == TEXT
    rad.put(f"{url}/draft", json={"text": TEXT + "\nADDENDUM: 4 mm nodule, right lower lobe."})
    amended = rad.post(f"{url}/sign", json={"state": "final", "password": PASSWORD}).json()
    assert [v["state"] for v in amended["versions"]] == ["final", "amended"]
    versions = ref.get(f"{url}/versions").json()
    assert versions[0]["text"] == TEXT  # the earlier version, unchanged
    text = _pdf_text(ref.get(versions[1]["pdf_url"]).content, tmp_path)
    assert "AMENDED REPORT (version 2)" in text and "4 mm nodule" in text


def test_a_pdf_attachment_is_stored_in_the_study_and_anything_else_is_refused(
    clients, dw, runtime: Runtime, study: str
) -> None:
    rad, ref = clients("rad_north"), clients("ref_north")
    url = f"/api/studies/north/{study}/attachments"
    odd_pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"  # odd length
    assert len(odd_pdf) % 2 == 1
    refused = rad.post(url, files={"file": ("scan.png", b"\x89PNG\r\n", "image/png")})
    assert refused.status_code == 415 and "only PDF documents" in refused.json()["detail"]
    assert ref.post(url, files={"file": ("r.pdf", odd_pdf, "application/pdf")}).status_code == 403
    made = rad.post(
        url, files={"file": ("req.pdf", odd_pdf, "application/pdf")}, data={"title": "Requisition"}
    )
    assert made.status_code == 201, made.text
    (listed,) = ref.get(url).json()
    assert (listed["title"], listed["filename"], listed["size_bytes"]) == (
        "Requisition",
        "req.pdf",
        len(odd_pdf),
    )
    instance = clients("admin").get(
        f"/dicom-web/studies/{study}/series/{listed['series_instance_uid']}/instances/"
        f"{listed['sop_instance_uid']}",
        headers={"Accept": 'multipart/related; type="application/dicom"'},
    )
    ((_, part),) = dw.split_multipart(instance)
    ds = dcmread(io.BytesIO(part))
    # Stored padded to an even length; its declared length gives back the upload exactly.
    assert bytes(ds.EncapsulatedDocument) == odd_pdf + b"\x00"
    assert encapsulated_document(ds) == odd_pdf
    assert [d["title"] for _, _, d in _audit(runtime, "attachment")] == ["Requisition"]
    got = ref.get(f"{url}/{listed['id']}/pdf")
    assert (got.status_code, got.content) == (200, odd_pdf)  # the padding byte cut off
    assert clients("rad_south").get(f"{url}/{listed['id']}/pdf").status_code == 404
