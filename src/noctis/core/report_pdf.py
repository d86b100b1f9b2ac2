"""A signed report as a PDF (ReportLab): the facility's name, the patient and the study, the
report's sections, who signed it and when, its version, and "AMENDED" marks on amendments.

The output is a pure function of its input (ReportLab's invariant mode: no creation time or
random document ID), so a version's PDF can be rendered again, identical, if storing it has to
be retried. It is also made even-length (a newline after ``%%EOF``, which PDF readers allow),
so DICOM stores it without a padding byte.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from xml.sax.saxutils import escape

from noctis.dicom.person_names import readable_person_name

# A TrueType font with the whole of Unicode's common scripts if the machine has it (Debian's
# fonts-dejavu-core); ReportLab's built-in Helvetica covers Latin-1 only.
_DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
_HEADING = re.compile(r"^([A-Z][A-Z /&-]{1,40}):\s*(.*)$")


@dataclass(frozen=True)
class ReportContent:
    facility_name: str
    patient_name: str
    patient_id: str
    patient_birth_date: str
    study_description: str
    study_date: str
    accession_number: str
    modalities: str
    study_instance_uid: str
    text: str
    state: str  # preliminary | final | amended
    version: int
    author: str
    signed_by: str
    signed_at: datetime


def sections(text: str) -> list[tuple[str, str]]:
    """The report's sections as (heading, text): a line ``FINDINGS:`` (capitals and a colon)
    starts one; text before the first heading has an empty heading."""
    found: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines():
        match = _HEADING.match(line.strip())
        if match:
            found.append((match.group(1), [match.group(2)] if match.group(2) else []))
        else:
            found[-1][1].append(line)
    return [(h, "\n".join(lines).strip()) for h, lines in found if h or "".join(lines).strip()]


def render_report_pdf(content: ReportContent) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    regular, bold = _fonts()
    body = ParagraphStyle("body", fontName=regular, fontSize=10.5, leading=14)
    small = ParagraphStyle("small", parent=body, fontSize=9, leading=12)
    heading = ParagraphStyle("heading", parent=body, fontName=bold, fontSize=11, spaceBefore=8)
    title = ParagraphStyle("title", parent=body, fontName=bold, fontSize=16, leading=20)
    mark = ParagraphStyle("mark", parent=title, textColor=colors.HexColor("#b00020"))
    amended = content.state == "amended"

    story: list[object] = [Paragraph(escape(content.facility_name), title)]
    label = {"preliminary": "PRELIMINARY REPORT", "final": "FINAL REPORT"}
    if amended:
        story.append(Paragraph(f"AMENDED REPORT (version {content.version})", mark))
    else:
        story.append(Paragraph(label.get(content.state, "REPORT"), heading))
    rows = [
        ("Patient", readable_person_name(content.patient_name)),
        ("Patient ID", content.patient_id),
        ("Birth date", _date(content.patient_birth_date)),
        ("Study", content.study_description),
        ("Study date", _date(content.study_date)),
        ("Accession", content.accession_number),
        ("Modality", content.modalities.replace("\\", ", ")),
        ("Study UID", content.study_instance_uid),
    ]
    table = Table(
        [[Paragraph(k, small), Paragraph(escape(v), small)] for k, v in rows],
        colWidths=(32 * mm, 140 * mm),
    )
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
    story += [Spacer(1, 4 * mm), table, Spacer(1, 4 * mm)]
    for name, text in sections(content.text):
        if name:
            story.append(Paragraph(escape(name), heading))
        for paragraph in text.split("\n\n"):
            story.append(Paragraph(escape(paragraph).replace("\n", "<br/>"), body))
    signed = content.signed_at.strftime("%Y-%m-%d %H:%M UTC")
    story += [
        Spacer(1, 8 * mm),
        Paragraph(
            f"Signed {content.state} by {escape(content.signed_by)} on {signed} · "
            f"version {content.version} · written by {escape(content.author)}",
            small,
        ),
    ]
    if amended:
        story.append(Paragraph("AMENDED: this version replaces every earlier one.", mark))

    out = io.BytesIO()
    document = SimpleDocTemplate(
        out,
        pagesize=A4,
        invariant=True,
        title=f"Report {content.accession_number or content.study_instance_uid}",
        author=content.signed_by,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=16 * mm,
        bottomMargin=16 * mm,
    )

    def footer(canvas: object, doc: object) -> None:
        canvas.saveState()  # type: ignore[attr-defined]
        canvas.setFont(regular, 8)  # type: ignore[attr-defined]
        text = f"{content.facility_name} · version {content.version} · {content.state}"
        if amended:
            text = "AMENDED · " + text
        canvas.drawString(18 * mm, 10 * mm, text)  # type: ignore[attr-defined]
        canvas.drawRightString(  # type: ignore[attr-defined]
            A4[0] - 18 * mm,
            10 * mm,
            f"page {doc.page}",  # type: ignore[attr-defined]
        )
        canvas.restoreState()  # type: ignore[attr-defined]

    document.build(story, onFirstPage=footer, onLaterPages=footer)
    pdf = out.getvalue()
    return pdf + b"\n" if len(pdf) % 2 else pdf


@cache
def _fonts() -> tuple[str, str]:
    regular, bold = _DEJAVU / "DejaVuSans.ttf", _DEJAVU / "DejaVuSans-Bold.ttf"
    if not (regular.is_file() and bold.is_file()):
        return "Helvetica", "Helvetica-Bold"
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    pdfmetrics.registerFont(TTFont("NoctisSans", str(regular)))
    pdfmetrics.registerFont(TTFont("NoctisSans-Bold", str(bold)))
    return "NoctisSans", "NoctisSans-Bold"


def _date(value: str) -> str:
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value
