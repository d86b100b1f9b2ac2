"""QIDO-RS query parameters: matching keys by keyword or tag, includefield, paging.

Anything the archive cannot honour is refused with a message (HTTP 400) rather than ignored:
a filter that is silently dropped returns studies the user did not ask for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_description, keyword_for_tag, tag_for_keyword

from noctis.api.dicomweb.context import FACILITY_PARAMETER
from noctis.index.query import ATTRIBUTES, BY_TAG, Attribute, Level

MAX_LIMIT = 1000
_DEPTH = {Level.PATIENT: 0, Level.STUDY: 1, Level.SERIES: 2, Level.IMAGE: 3}
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")

STUDY_DEFAULTS = (
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDescription",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_DEFAULTS = (
    "Modality",
    "SeriesDescription",
    "SeriesNumber",
    "SeriesInstanceUID",
    "SeriesDate",
    "SeriesTime",
    "BodyPartExamined",
    "NumberOfSeriesRelatedInstances",
    "StudyInstanceUID",
)
INSTANCE_DEFAULTS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "AvailableTransferSyntaxUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
)


_LEVEL_NAMES = {
    Level.PATIENT: "a patient-level",
    Level.STUDY: "a study-level",
    Level.SERIES: "a series-level",
    Level.IMAGE: "an instance-level",
}


class ParamError(ValueError):
    """A query parameter the archive cannot honour; the message goes to the client."""


@dataclass(frozen=True)
class QidoParams:
    level: Level
    filters: dict[str, str]
    returned: tuple[str, ...]  # keywords returned for each match
    limit: int
    offset: int = 0
    fuzzy: bool = False
    notes: list[str] = field(default_factory=list)  # warnings for the client


def check_uid(uid: str, what: str = "UID") -> str:
    if not _UID.match(uid) or len(uid) > 64:
        raise ParamError(f"{what} {uid[:80]!r} is not a valid DICOM UID")
    return uid


def resolve_key(key: str) -> Attribute:
    """The index attribute a query key names (keyword or 8-digit tag), or ParamError."""
    keyword = key
    if _TAG.match(key):
        tag = int(key, 16)
        if tag in BY_TAG:
            return BY_TAG[tag]
        keyword = keyword_for_tag(tag) or ""
        if not keyword:
            raise ParamError(f"unknown attribute tag {key}")
    elif "." in key or "," in key:
        raise ParamError(f"sequence matching ({key}) is not supported")
    if keyword in ATTRIBUTES:
        return ATTRIBUTES[keyword]
    known = tag_for_keyword(keyword)
    if known is None:
        raise ParamError(f"unknown query parameter or attribute {key!r}")
    name = dictionary_description(known)
    raise ParamError(f"matching on {keyword} ({name}) is not supported by this archive")


def parse_qido(
    items: Iterable[tuple[str, str]],
    level: Level,
    *,
    scope: dict[str, str] | None = None,
) -> QidoParams:
    """Parse a QIDO query string. ``scope`` holds the UIDs from the path (study, series)."""
    filters: dict[str, str] = {}
    include: list[str] = []
    include_all = False
    limit, offset, fuzzy = MAX_LIMIT, 0, False
    notes: list[str] = []
    for key, value in items:
        lowered = key.lower()
        if lowered == "includefield":
            for name in (v.strip() for v in value.split(",")):
                if not name:
                    continue
                if name.lower() == "all":
                    include_all = True
                    continue
                keyword = _include_keyword(name)
                if keyword:
                    include.append(keyword)
        elif lowered == "limit":
            limit = _integer(value, "limit", minimum=1)
            if limit > MAX_LIMIT:
                notes.append(f"limit {limit} reduced to {MAX_LIMIT}")
                limit = MAX_LIMIT
        elif lowered == "offset":
            offset = _integer(value, "offset", minimum=0)
        elif lowered == FACILITY_PARAMETER:
            continue  # not an attribute: which facility answers (WebContext.facility)
        elif lowered == "fuzzymatching":
            if value.strip().lower() not in ("true", "false"):
                raise ParamError("fuzzymatching must be true or false")
            fuzzy = value.strip().lower() == "true"
        else:
            attribute = resolve_key(key)
            if not attribute.matchable:
                raise ParamError(f"matching on {attribute.keyword} is not supported")
            if _DEPTH[attribute.level] > _DEPTH[level]:
                raise ParamError(
                    f"{attribute.keyword} is {_LEVEL_NAMES[attribute.level]} attribute "
                    f"and cannot be used to match {_plural(level)}"
                )
            if attribute.keyword == "ModalitiesInStudy" and level is not Level.STUDY:
                # index.query matches it through a subquery correlated to study queries only.
                raise ParamError("ModalitiesInStudy matches studies; use Modality for series")
            if attribute.keyword in filters:
                raise ParamError(f"{attribute.keyword} is given more than once")
            if attribute.vr == "UI":
                uids = [v.strip() for v in value.split("\\") if v.strip()]
                if value.strip() and not uids:
                    raise ParamError(f"{attribute.keyword} is an empty list of UIDs")
                for uid in uids:
                    if uid != "*":
                        check_uid(uid, attribute.keyword)
            if attribute.vr in ("IS", "US"):
                _check_numbers(attribute, value)
            filters[attribute.keyword] = value
    for keyword, uid in (scope or {}).items():
        filters[keyword] = check_uid(uid, keyword)
    returned = _returned(level, scope or {}, filters, include, include_all)
    return QidoParams(level, filters, returned, limit, offset, fuzzy, notes)


def _include_keyword(name: str) -> str | None:
    """The keyword of an includefield entry; None for real attributes the index lacks."""
    try:
        return resolve_key(name).keyword
    except ParamError as exc:
        if "not supported" in str(exc):
            return None  # a valid attribute this archive does not keep: nothing to include
        raise


def _returned(
    level: Level,
    scope: dict[str, str],
    filters: dict[str, str],
    include: list[str],
    include_all: bool,
) -> tuple[str, ...]:
    depth = _DEPTH[level]
    if include_all:
        wanted = [kw for kw, a in ATTRIBUTES.items() if _DEPTH[a.level] <= depth and a.column]
    else:
        wanted = []
        if level is Level.STUDY or (depth >= 2 and "StudyInstanceUID" not in scope):
            wanted += STUDY_DEFAULTS
        if level is Level.SERIES or (depth == 3 and "SeriesInstanceUID" not in scope):
            wanted += SERIES_DEFAULTS
        if level is Level.IMAGE:
            wanted += INSTANCE_DEFAULTS
        wanted += [kw for kw in filters]
        wanted += [kw for kw in include if _DEPTH[ATTRIBUTES[kw].level] <= depth]
    ordered = dict.fromkeys(kw for kw in wanted if ATTRIBUTES[kw].column is not None)
    return tuple(sorted(ordered, key=lambda kw: ATTRIBUTES[kw].tag))


def _integer(value: str, name: str, *, minimum: int, maximum: int = 2**31 - 1) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise ParamError(f"{name} must be an integer, got {value[:40]!r}") from exc
    if number < minimum:
        raise ParamError(f"{name} must be at least {minimum}")
    if number > maximum:
        raise ParamError(f"{name} must be at most {maximum}")
    return number


def _check_numbers(attribute: Attribute, value: str) -> None:
    low, high = (0, 65535) if attribute.vr == "US" else (-(2**31), 2**31 - 1)
    for item in (v.strip() for v in value.split("\\")):
        if not item or item == "*":
            continue
        try:
            number = int(item)
        except ValueError as exc:
            raise ParamError(f"{attribute.keyword} must be a number, got {item[:40]!r}") from exc
        if not low <= number <= high:
            raise ParamError(f"{attribute.keyword} {number} is out of range")


def _plural(level: Level) -> str:
    return {
        Level.PATIENT: "patients",
        Level.STUDY: "studies",
        Level.SERIES: "series",
        Level.IMAGE: "instances",
    }[level]
