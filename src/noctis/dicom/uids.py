"""UID syntax (PS3.5 9.1): what the archive refuses to file an instance under.

A UID is 1 to 64 characters of digits and dots; its components are not empty and do not
start with 0 unless they are "0". An instance whose UIDs break this can be stored but never
addressed (DICOMweb paths, C-MOVE keys and object keys all carry them), so ingest refuses it
with a permanent failure.
"""

from __future__ import annotations

import re

from noctis.dicom.errors import MalformedDicom

MAX_LENGTH = 64
_COMPONENT = re.compile(r"0|[1-9][0-9]*")
_VALID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")


def uid_problem(uid: str) -> str | None:
    """What is wrong with ``uid``, or None if it is a valid UID."""
    if len(uid) <= MAX_LENGTH and _VALID.fullmatch(uid):
        return None  # one match for the valid ones, which are nearly all
    if not uid:
        return "empty"
    if len(uid) > MAX_LENGTH:
        return f"{len(uid)} characters, more than {MAX_LENGTH}"
    if uid.strip("0123456789."):
        return "not only digits and dots"
    for component in uid.split("."):
        if not component:
            return "an empty component"
        if not _COMPONENT.fullmatch(component):
            return "a component with a leading zero"
    return None


def check_uids(uids: dict[str, str]) -> None:
    """MalformedDicom naming the first attribute (keyword -> value) whose UID is invalid."""
    for keyword, uid in uids.items():
        problem = uid_problem(uid)
        if problem is not None:
            raise MalformedDicom(f"invalid {keyword}: {problem}")
