"""Field types shared by the custom-resource spec models and local YAML files."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints


def _check_ae_title(value: str) -> str:
    # DICOM PS3.5: AE is 1-16 characters of the default repertoire, no backslash or control
    # characters; leading and trailing spaces are not significant, so we refuse them.
    if value != value.strip():
        raise ValueError("AE title must not start or end with a space")
    if "\\" in value or any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
        raise ValueError("AE title must be printable ASCII without backslash")
    return value


AE_TITLE_PATTERN = r"^[\x21-\x5B\x5D-\x7E]([\x20-\x5B\x5D-\x7E]{0,14}[\x21-\x5B\x5D-\x7E])?$"

AETitle = Annotated[
    str,
    StringConstraints(min_length=1, max_length=16, pattern=AE_TITLE_PATTERN),
    AfterValidator(_check_ae_title),
]

Port = Annotated[int, Field(ge=1, le=65535)]


def _check_cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError as exc:
        raise ValueError(f"not a CIDR: {value!r}") from exc


CIDR = Annotated[str, AfterValidator(_check_cidr)]

KubeName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
]

# A coded concept as SCHEME:VALUE (DICOM PS3.3 Code Sequence Macro: Coding Scheme Designator
# up to 16 characters, Code Value up to 64), e.g. SCT:274100004.
CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,15}:[^\s:][^\s]{0,63}$"

CodeRef = Annotated[str, StringConstraints(min_length=3, max_length=81, pattern=CODE_PATTERN)]
