"""Query/retrieve identifiers: from the peer's data set to a `MatchQuery`, and back.

One reading of an identifier serves C-FIND, C-MOVE and C-GET:

- QueryRetrieveLevel must be PATIENT, STUDY, SERIES or IMAGE (no PATIENT in Study Root).
- Keys the index holds (`noctis.index.query.ATTRIBUTES`) at the query level or above are
  matched: single value, ``*``/``?`` wildcards, date/time ranges, UID lists. Matching is
  relational-lenient: a key of a higher level narrows the result even without the unique keys
  of the levels in between (what most PACS do; strict hierarchical peers send them anyway).
- Any other key (unknown, deeper than the level, private, or a sequence) is "unsupported": it
  does not take part in matching and comes back zero-length, and C-FIND flags it with FF01.
- A retrieve must name what it retrieves: the unique key of its level (PatientID, or a
  Study/Series/SOP Instance UID list) with a value and no wildcard, so an empty C-MOVE cannot
  copy a whole facility.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from noctis.dicom.plain_data_set import Element
from noctis.index.query import ATTRIBUTES, BY_TAG, Attribute, Level, MatchQuery

QUERY_LEVEL_TAG = Tag(0x0008, 0x0052)
CHARSET_TAG = Tag(0x0008, 0x0005)
RETRIEVE_AE_TAG = Tag(0x0008, 0x0054)
AVAILABILITY_TAG = Tag(0x0008, 0x0056)
RESPONSE_CHARSET = "ISO_IR 192"  # the index holds Unicode text; UTF-8 carries all of it

_DEPTH = {Level.PATIENT: 0, Level.STUDY: 1, Level.SERIES: 2, Level.IMAGE: 3}
UNIQUE_KEYS = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}
_SPECIAL_TAGS = frozenset({QUERY_LEVEL_TAG, CHARSET_TAG})


class IdentifierUndecodable(ValueError):
    """The identifier's bytes cannot be decoded as a data set."""


class IdentifierInvalid(ValueError):
    """The identifier decodes but asks something the model does not allow."""


@dataclass
class ParsedIdentifier:
    level: Level
    filters: dict[str, str]
    return_keys: list[DataElement]  # the peer's top-level keys, in its order
    unsupported: list[str] = field(default_factory=list)

    def match_query(self, facility_id: int) -> MatchQuery:
        return MatchQuery(self.level, self.filters, facility_ids=[facility_id])


def decode_identifier(event: Any) -> Dataset:
    """The request's identifier, with every element decoded (pydicom decodes lazily)."""
    try:
        identifier = event.identifier
    except Exception as exc:
        raise IdentifierUndecodable(f"identifier cannot be decoded: {exc}") from exc
    return decoded(identifier)


def decoded(identifier: Dataset) -> Dataset:
    """``identifier`` with every element decoded; IdentifierUndecodable if one cannot be."""
    try:
        for element in identifier:  # converts each raw element, raising on bad values
            _ = element.value
    except Exception as exc:
        raise IdentifierUndecodable(f"identifier cannot be decoded: {exc}") from exc
    return identifier


def parse_identifier(identifier: Dataset, root: str) -> ParsedIdentifier:
    """Read level, matching keys and return keys; ``root`` is PATIENT or STUDY (the model)."""
    level = _level(identifier, root)
    filters: dict[str, str] = {}
    return_keys: list[DataElement] = []
    unsupported: list[str] = []
    for element in identifier:
        if element.tag in _SPECIAL_TAGS:
            continue
        return_keys.append(element)
        attribute = supported_attribute(element, level)
        if attribute is None:
            if element.tag not in (RETRIEVE_AE_TAG, AVAILABILITY_TAG):
                unsupported.append(element.keyword or str(element.tag))
            continue
        value = _text(element.value)
        if value:
            filters[attribute.keyword] = value
    return ParsedIdentifier(level, filters, return_keys, unsupported)


def require_unique_key(parsed: ParsedIdentifier) -> None:
    """A retrieve must name its instances by the unique key of its level."""
    keyword = UNIQUE_KEYS[parsed.level]
    value = parsed.filters.get(keyword, "")
    if not value or "*" in value or "?" in value:
        raise IdentifierInvalid(f"{parsed.level.value} retrieve needs a {keyword} value")


def supported_attribute(element: DataElement, level: Level) -> Attribute | None:
    attribute = BY_TAG.get(int(element.tag))
    if attribute is None or element.VR == "SQ":
        return None
    if _DEPTH[attribute.level] > _DEPTH[level]:
        return None
    if attribute.keyword == "NumberOfPatientRelatedStudies" and level is not Level.PATIENT:
        return None
    return attribute


def response_elements(
    parsed: ParsedIdentifier, values: dict[str, Any], retrieve_ae_title: str
) -> list[Element]:
    """A C-FIND response for one match as (tag, VR, value): every requested key, with a value
    or empty (``None``)."""
    found: dict[int, tuple[str, Any]] = {
        int(CHARSET_TAG): ("CS", RESPONSE_CHARSET),
        int(QUERY_LEVEL_TAG): ("CS", parsed.level.value),
    }
    for element in parsed.return_keys:
        attribute = supported_attribute(element, parsed.level)
        if attribute is not None:
            found[attribute.tag] = (attribute.vr, _dicom_value(values.get(attribute.keyword)))
        elif element.tag == RETRIEVE_AE_TAG:
            found[int(element.tag)] = ("AE", retrieve_ae_title)
        elif element.tag == AVAILABILITY_TAG:
            found[int(element.tag)] = ("CS", "ONLINE")
        else:
            found[int(element.tag)] = (element.VR, None)
    # The unique keys of the level and the levels above always come back (PS3.4 C.4.1.2.3).
    for level, keyword in UNIQUE_KEYS.items():
        attribute = ATTRIBUTES[keyword]
        if _DEPTH[level] <= _DEPTH[parsed.level] and attribute.tag not in found:
            found[attribute.tag] = (attribute.vr, _dicom_value(values.get(keyword)))
    return [(tag, vr, value) for tag, (vr, value) in found.items()]


def identifier_dataset(elements: list[Element]) -> Dataset:
    """The response elements as a pydicom data set (an empty sequence for an SQ key)."""
    ds = Dataset()
    for tag, vr, value in elements:
        ds.add_new(tag, vr, Sequence() if vr == "SQ" else value)
    return ds


def _level(identifier: Dataset, root: str) -> Level:
    raw = identifier.get("QueryRetrieveLevel")
    text = _text(raw).upper() if raw is not None else ""
    if not text:
        raise IdentifierInvalid("QueryRetrieveLevel is missing")
    try:
        level = Level(text)
    except ValueError as exc:
        raise IdentifierInvalid(f"QueryRetrieveLevel {text!r} is not a level") from exc
    if root == "STUDY" and level is Level.PATIENT:
        raise IdentifierInvalid("Study Root has no PATIENT level")
    return level


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(_text(v) for v in value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return str(value).strip().strip("\x00").strip()


def _dicom_value(value: Any) -> Any:
    if value is None or value == "":
        return None
    return value
