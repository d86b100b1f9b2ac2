"""The DICOM JSON model (PS3.18 Annex F): data sets and single values as JSON-ready dicts.

Large binary values become ``BulkDataURI`` references (``{prefix}{tag path}``, where the tag
path of a nested element is ``00540016/0/00181074``: sequence tag, item index, tag); small
ones are inlined as base64. Values the data set holds but cannot decode are sent as ``UN``
``InlineBinary`` rather than failing the whole response: a viewer can live without one
odd private element, not without the study.
"""

from __future__ import annotations

import base64
import functools
import math
import struct
from collections.abc import Iterable
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"})
DEFAULT_BULK_THRESHOLD = 1024
PIXEL_DATA = 0x7FE00010
# Pixel data variants, all of them bulk data, never inlined or decoded into the metadata.
PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, PIXEL_DATA})


def tag_key(tag: int) -> str:
    return f"{tag:08X}"


def dataset_to_json(
    ds: Dataset,
    *,
    bulk_prefix: str | None = None,
    bulk_threshold: int = DEFAULT_BULK_THRESHOLD,
    _path: str = "",
) -> dict[str, Any]:
    """The data set as a DICOM JSON object; group lengths and file meta are left out.

    Elements still in their raw (as read) form are encoded straight from their bytes, which
    is several times faster than letting pydicom convert each one; anything unusual (other
    character sets, sequences of defined length) goes through pydicom.
    """
    result: dict[str, Any] = {}
    encoding = _simple_encoding(ds)
    pixel_representation = _pixel_representation(ds)
    for tag in ds.keys():  # noqa: SIM118 (iterating a Dataset converts every element)
        if tag & 0xFFFF == 0:  # group length: meaningless outside the encoding
            continue
        key = tag_key(tag)
        try:
            raw = ds.get_item(tag)
            fast = None
            if encoding and isinstance(raw, RawDataElement) and raw.value is not None:
                fast = _raw_json(
                    raw, encoding, pixel_representation, bulk_prefix, bulk_threshold, _path + key
                )
            if fast is None:
                fast = _element_json(ds[tag], bulk_prefix, bulk_threshold, _path + key)
            result[key] = fast
        except Exception:
            result[key] = _undecodable(ds, tag, bulk_prefix, bulk_threshold, _path + key)
    return result


_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
_SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR"})
_KEEP_LEADING_SPACES = frozenset({"LT", "ST", "UT", "UC"})
_STRUCT = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}
_SIMPLE_CHARSETS = {"iso8859": "latin_1", "latin_1": "latin_1", "UTF8": "utf_8"}


def _simple_encoding(ds: Dataset) -> str | None:
    """The one Python codec the data set's text uses, or None for ISO 2022 code extensions."""
    try:
        encodings = ds._character_set
    except Exception:
        return None
    if isinstance(encodings, str):
        encodings = [encodings]
    if len(encodings) != 1:
        return None
    return _SIMPLE_CHARSETS.get(encodings[0])


def _pixel_representation(ds: Dataset) -> int:
    try:
        return int(ds.get("PixelRepresentation") or 0)
    except Exception:
        return 0


@functools.lru_cache(maxsize=4096)
def _dictionary_vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        group, element = tag >> 16, tag & 0xFFFF
        if group % 2 == 1 and 0x0010 <= element <= 0x00FF:
            return "LO"  # private creator
        return "UN"


def _raw_json(
    raw: RawDataElement,
    encoding: str,
    pixel_representation: int,
    bulk_prefix: str | None,
    threshold: int,
    path: str,
) -> dict[str, Any] | None:
    """One element's JSON from its raw bytes; None to let pydicom decode it."""
    vr = str(raw.VR) if raw.VR else _dictionary_vr(int(raw.tag))
    if vr == "UN":
        # A standard attribute sent as UN (by a peer that did not know it): use its real VR.
        known = _dictionary_vr(int(raw.tag))
        if known != "UN":
            if known == "SQ" or " or " in known or not raw.is_little_endian:
                return None
            vr = known
    if " or " in vr:
        if vr.startswith("US or SS"):
            vr = "SS" if pixel_representation == 1 else "US"
        else:
            vr = _plain_vr(vr)
    value = raw.value
    if vr == "SQ" or not isinstance(value, bytes):
        return None
    if vr in BINARY_VRS or int(raw.tag) in PIXEL_DATA_TAGS:
        return binary_json(vr, value, bulk_prefix, threshold, path)
    if not value:
        return {"vr": vr}
    endian = "<" if raw.is_little_endian else ">"
    if vr in _STRUCT:
        code = _STRUCT[vr]
        size = struct.calcsize("<" + code)  # standard sizes, not the platform's
        count = len(value) // size
        numbers = struct.unpack(f"{endian}{count}{code}", value[: count * size])
        return {"vr": vr, "Value": [_number(n) for n in numbers]} if numbers else {"vr": vr}
    if vr == "AT":
        count = len(value) // 4
        pairs = struct.unpack(f"{endian}{count * 2}H", value[: count * 4])
        tags = [tag_key(pairs[i] << 16 | pairs[i + 1]) for i in range(0, len(pairs), 2)]
        return {"vr": vr, "Value": tags} if tags else {"vr": vr}
    text = value.decode(encoding if vr in _TEXT_VRS else "latin_1", "replace")
    if "\x1b" in text:
        return None  # code extensions: pydicom knows how
    parts = [text] if vr in _SINGLE_VALUED else text.split("\\")
    if vr in _KEEP_LEADING_SPACES:
        parts = [p.rstrip(" \x00") for p in parts]
    else:
        parts = [p.strip(" \x00") for p in parts]
    if not any(parts):
        return {"vr": vr}
    if vr == "PN":
        values: list[Any] = [_person_name(p) for p in parts]
    elif vr == "IS":
        values = [_integer_string(p) for p in parts]
    elif vr == "DS":
        values = [_decimal_string(p) for p in parts]
    else:
        values = [p if p else None for p in parts]
    return {"vr": vr, "Value": values}


def _element_json(
    element: DataElement, bulk_prefix: str | None, threshold: int, path: str
) -> dict[str, Any]:
    vr = _plain_vr(element.VR)
    value = element.value
    if vr == "SQ":
        items = [
            dataset_to_json(
                item, bulk_prefix=bulk_prefix, bulk_threshold=threshold, _path=f"{path}/{i}/"
            )
            for i, item in enumerate(value or ())
        ]
        return {"vr": vr, "Value": items} if items else {"vr": vr}
    if vr in BINARY_VRS or element.tag in PIXEL_DATA_TAGS:
        return binary_json(vr, value, bulk_prefix, threshold, path)
    return value_json(vr, value)


def binary_json(
    vr: str, value: bytes | None, bulk_prefix: str | None, threshold: int, path: str
) -> dict[str, Any]:
    if not value:
        return {"vr": vr}
    if bulk_prefix is not None and len(value) > threshold:
        return {"vr": vr, "BulkDataURI": bulk_prefix + path}
    return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}


def value_json(vr: str, value: Any) -> dict[str, Any]:
    """One attribute's JSON for a non-binary, non-sequence VR; ``None``/empty: no Value."""
    values = _as_list(value)
    if not values:
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [_person_name(v) for v in values]}
    if vr == "AT":
        return {"vr": vr, "Value": [tag_key(int(v)) for v in values]}
    if vr in NUMBER_VRS:
        return {"vr": vr, "Value": [_number(v) for v in values]}
    if vr == "IS":
        return {"vr": vr, "Value": [_integer_string(v) for v in values]}
    if vr == "DS":
        return {"vr": vr, "Value": [_decimal_string(v) for v in values]}
    return {"vr": vr, "Value": [_text(v) for v in values]}


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        items = list(value)
        return items if any(v not in (None, "") for v in items) else []
    if value == "" or value == b"":
        return []
    return [value]


def _person_name(value: Any) -> dict[str, str] | None:
    text = str(value)
    if not text:
        return None
    groups = text.split("=")
    result = {}
    for name, group in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False):
        if group:
            result[name] = group
    return result or None


def _number(value: Any) -> int | float | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN and infinities are not JSON numbers
    return value  # type: ignore[no-any-return]


def _integer_string(value: Any) -> int | str | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value).strip() or None


def _decimal_string(value: Any) -> int | float | str | None:
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value).strip() or None
    if not math.isfinite(number):
        return None
    return int(number) if number.is_integer() and "." not in str(value) else number


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value)
    return text if text != "" else None


def _plain_vr(vr: str | None) -> str:
    # Implicit VR files leave some VRs ambiguous ("OB or OW", "US or SS"); the JSON model
    # needs one. The first spelling is what the dictionary lists as the default.
    if not vr:
        return "UN"
    return vr.split(" or ")[0] if " or " in vr else vr


def _undecodable(
    ds: Dataset, tag: BaseTag, bulk_prefix: str | None, threshold: int, path: str
) -> dict[str, Any]:
    raw = ds.get_item(tag)
    value = raw.value if isinstance(raw, RawDataElement | DataElement) else None
    if not isinstance(value, bytes):
        return {"vr": "UN"}
    return binary_json("UN", value, bulk_prefix, threshold, path)


def find_bulk(ds: Dataset, path: str) -> DataElement | None:
    """The element a BulkDataURI tag path names (``7FE00010``, ``00540016/0/00181074``)."""
    parts = [p for p in path.strip("/").split("/") if p]
    current: Dataset = ds
    try:
        while parts:
            tag = int(parts.pop(0), 16)
            element = current[tag]
            if not parts:
                return element
            index = int(parts.pop(0))
            current = element.value[index]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return None


def sequence(items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    listed = list(items)
    return {"vr": "SQ", "Value": listed} if listed else {"vr": "SQ"}
