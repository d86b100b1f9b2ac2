"""Data sets of plain elements written directly, in little endian implicit or explicit VR.

A C-FIND response identifier is a handful of text elements (names, dates, UIDs, counts) taken
from the index. Building and writing one through pydicom (element objects, the generic writer)
was most of a C-FIND's time per match; written here it is a few byte joins. Only what is
plainly encodable is written: text of the text VRs (UTF-8 where the character set applies, the
responses say ISO_IR 192), integers of IS and US, empty values. Anything else (a sequence,
binary data, a value too long for its length field) returns None, and the caller writes the
data set with pydicom. Tests keep the bytes equal to pydicom's.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, Final

# Explicit VR: these have a 2-byte reserved field and a 4-byte length.
_LONG_LENGTH: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN"})
_LONG_LENGTH_TEXT: Final = frozenset({"UR", "UT"})
# Text whose bytes depend on the Specific Character Set (UTF-8 for ISO_IR 192).
_CHARACTER_SET_TEXT: Final = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
# Text of the default repertoire only.
_ASCII_TEXT: Final = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})
_NUMBERS_AS_TEXT: Final = frozenset({"IS", "DS"})

_TAG: Final = struct.Struct("<HH")
_SHORT: Final = struct.Struct("<H")
_LONG: Final = struct.Struct("<I")

Element = tuple[int, str, Any]  # tag, VR, value (str, int or None)


def encode_plain(elements: Iterable[Element], *, implicit_vr: bool) -> bytes | None:
    """The data set of ``elements`` (written in tag order), or None if one is not plain."""
    out = bytearray()
    for tag, vr, value in sorted(elements, key=lambda element: element[0]):
        raw = _value_bytes(vr, value)
        if raw is None:
            return None
        out += _TAG.pack(tag >> 16, tag & 0xFFFF)
        if implicit_vr:
            out += _LONG.pack(len(raw))
        elif vr in _LONG_LENGTH or vr in _LONG_LENGTH_TEXT:
            out += vr.encode("ascii") + b"\0\0" + _LONG.pack(len(raw))
        elif len(raw) > 0xFFFF:
            return None
        else:
            out += vr.encode("ascii") + _SHORT.pack(len(raw))
        out += raw
    return bytes(out)


def _value_bytes(vr: str, value: Any) -> bytes | None:
    if value is None or value == "":
        return b"" if vr != "SQ" else None  # an empty sequence: pydicom's business
    if vr == "US":
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFFF:
            return _SHORT.pack(value)
        return None
    if isinstance(value, int) and not isinstance(value, bool) and vr in _NUMBERS_AS_TEXT:
        value = str(value)
    if not isinstance(value, str):
        return None
    if vr in _CHARACTER_SET_TEXT:
        raw = value.encode("utf-8")
    elif vr in _ASCII_TEXT:
        try:
            raw = value.encode("ascii")
        except UnicodeEncodeError:
            return None
    else:
        return None
    if len(raw) % 2:
        raw += b"\0" if vr == "UI" else b" "
    return raw
