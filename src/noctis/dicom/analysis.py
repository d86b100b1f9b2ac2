"""What an analysis result says: the summary and critical finding of a DICOM SR or SEG header.

Pure functions of a pydicom data set read without pixel data (``noctis.core.results`` reads it
from the store, bounded). A result declares a **critical finding** when any of these holds:

1. **SR, the standard's heading.** The content tree has a CONTAINER named (73568-8, LN,
   "Communication of Critical Results"), a heading of CID 7001 *Diagnostic Imaging Report
   Headings* (TID 2000 Basic Diagnostic Imaging Report), with at least one item in it.
2. **SR, significance.** A CODE item named (121403, DCM, "Level of Significance") has the value
   (371926006, SCT, "Highly significant") (CID 220 *Level of Significance*).
3. **Listed codes.** A coded value the facility lists as critical (``criticalFindingCodes``,
   ``SCHEME:VALUE``) appears as the value of an SR CODE item, as the SR's document title, or as
   a SEG segment's Segmented Property Type. Concept *names* never count: in a TID 1500
   qualitative evaluation the name is the question ("hemorrhage?") and the value the answer
   ("absent"), so only an asserted value is a finding.

Walks are bounded (depth, items, text length), so no document makes the summary grow without
limit.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

SR_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR",
    "1.2.840.10008.5.1.4.1.1.88.35": "Extensible SR",
    "1.2.840.10008.5.1.4.1.1.88.50": "Mammography CAD SR",
    "1.2.840.10008.5.1.4.1.1.88.59": "Key Object Selection",
    "1.2.840.10008.5.1.4.1.1.88.65": "Chest CAD SR",
    "1.2.840.10008.5.1.4.1.1.88.69": "Colon CAD SR",
}
SEG_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation",
    "1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation",
}
RESULT_CLASSES = {**SR_CLASSES, **SEG_CLASSES}

CRITICAL_RESULTS_HEADING = "LN:73568-8"  # Communication of Critical Results (CID 7001)
LEVEL_OF_SIGNIFICANCE = "DCM:121403"
HIGHLY_SIGNIFICANT = "SCT:371926006"

MAX_DEPTH = 16
MAX_ITEMS = 5000  # content items walked, at most
MAX_FINDINGS = 50  # lines kept in a summary
MAX_TEXT = 200  # characters kept of one line


@dataclass
class ResultSummary:
    kind: str  # "sr" or "seg"
    title: str = ""
    findings: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)  # asserted coded values, SCHEME:VALUE
    critical: bool = False
    critical_reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"findings": self.findings, "codes": self.codes}

    def _finding(self, line: str) -> None:
        if len(self.findings) < MAX_FINDINGS and line:
            self.findings.append(_cut(line))

    def _code(self, key: str) -> None:
        if key not in self.codes and len(self.codes) < MAX_FINDINGS:
            self.codes.append(key)

    def _critical(self, reason: str) -> None:
        if not self.critical:
            self.critical, self.critical_reason = True, _cut(reason)


def code_key(item: Dataset) -> str:
    """``SCHEME:VALUE`` of a Code Sequence item (Code Value, Long or URN Code Value)."""
    scheme = str(item.get("CodingSchemeDesignator", "") or "").strip().upper()
    value = ""
    for keyword in ("CodeValue", "LongCodeValue", "URNCodeValue"):
        value = str(item.get(keyword, "") or "").strip()
        if value:
            break
    return f"{scheme}:{value}" if scheme and value else ""


def normalise_codes(codes: Iterable[str]) -> frozenset[str]:
    """Codes as the facility and settings list them, compared as ``code_key`` builds them."""
    normalised = set()
    for code in codes:
        scheme, _, value = code.strip().partition(":")
        if scheme and value:
            normalised.add(f"{scheme.upper()}:{value.strip()}")
    return frozenset(normalised)


def summarise(ds: Dataset, critical_codes: Collection[str] = ()) -> ResultSummary:
    """The summary of an SR or SEG data set (its header), and whether it is critical."""
    sop_class = str(ds.get("SOPClassUID", ""))
    critical = normalise_codes(critical_codes)
    if sop_class in SEG_CLASSES:
        return _summarise_seg(ds, critical)
    return _summarise_sr(ds, critical)


def _meaning(item: Dataset) -> str:
    return str(item.get("CodeMeaning", "") or "").strip()


def _first(ds: Dataset, keyword: str) -> Dataset | None:
    sequence = ds.get(keyword)
    return sequence[0] if sequence else None


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _shown(item: Dataset) -> str:
    key = code_key(item)
    return f"{_meaning(item)} ({key})" if key else _meaning(item)


def _summarise_sr(ds: Dataset, critical: frozenset[str]) -> ResultSummary:
    summary = ResultSummary("sr")
    title = _first(ds, "ConceptNameCodeSequence")
    if title is not None:
        summary.title = _cut(_meaning(title))
        if code_key(title) in critical:
            summary._critical(f"document title {_shown(title)}")
    budget = [MAX_ITEMS]
    _walk(ds.get("ContentSequence") or [], summary, critical, 0, budget)
    return summary


def _walk(
    items: Iterable[Dataset],
    summary: ResultSummary,
    critical: frozenset[str],
    depth: int,
    budget: list[int],
) -> list[str]:
    """Walk content items; the text lines found (for a critical heading's reason)."""
    lines: list[str] = []
    if depth > MAX_DEPTH:
        return lines
    for item in items:
        if budget[0] <= 0:
            return lines
        budget[0] -= 1
        value_type = str(item.get("ValueType", "")).upper()
        name_item = _first(item, "ConceptNameCodeSequence")
        name = _meaning(name_item) if name_item is not None else ""
        name_key = code_key(name_item) if name_item is not None else ""
        line = ""
        if value_type == "TEXT":
            line = f"{name}: {item.get('TextValue', '')}" if name else str(item.get("TextValue"))
        elif value_type == "CODE":
            value = _first(item, "ConceptCodeSequence")
            if value is not None:
                key = code_key(value)
                line = f"{name}: {_shown(value)}" if name else _shown(value)
                if key:
                    summary._code(key)
                if key in critical:
                    summary._critical(line)
                if name_key == LEVEL_OF_SIGNIFICANCE and key == HIGHLY_SIGNIFICANT:
                    summary._critical(line)
        elif value_type == "NUM":
            line = _numeric(name, item)
        if line:
            summary._finding(line)
            lines.append(line)
        children = item.get("ContentSequence") or []
        if children:
            inner = _walk(children, summary, critical, depth + 1, budget)
            lines.extend(inner)
            if value_type == "CONTAINER" and name_key == CRITICAL_RESULTS_HEADING:
                summary._critical("; ".join(inner) or name)
    return lines


def _numeric(name: str, item: Dataset) -> str:
    measured = _first(item, "MeasuredValueSequence")
    if measured is None:
        return ""
    unit = _first(measured, "MeasurementUnitsCodeSequence")
    value = str(measured.get("NumericValue", "")).strip()
    units = str(unit.get("CodeValue", "")).strip() if unit is not None else ""
    return f"{name}: {value} {units}".strip()


def _summarise_seg(ds: Dataset, critical: frozenset[str]) -> ResultSummary:
    summary = ResultSummary("seg")
    summary.title = _cut(
        str(ds.get("ContentLabel", "") or ds.get("SeriesDescription", "") or "Segmentation")
    )
    for segment in (ds.get("SegmentSequence") or [])[:MAX_ITEMS]:
        label = str(segment.get("SegmentLabel", "") or "").strip()
        prop = _first(segment, "SegmentedPropertyTypeCodeSequence")
        line = label
        if prop is not None:
            key = code_key(prop)
            line = f"{label}: {_shown(prop)}" if label else _shown(prop)
            if key:
                summary._code(key)
            if key in critical:
                summary._critical(f"segment {line}")
        summary._finding(line)
    return summary
