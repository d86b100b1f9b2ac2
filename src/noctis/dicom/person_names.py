"""DICOM person names (PN, PS3.5 6.2) as people write them."""

from __future__ import annotations


def readable_person_name(name: str) -> str:
    """``Doe^Jane^^Dr`` as ``Doe, Jane`` (the alphabetic group's family and given names;
    ideographic and phonetic groups after ``=`` are left out); an empty name stays empty."""
    alphabetic = name.split("=", 1)[0]
    family, _, rest = alphabetic.partition("^")
    given = " ".join(part for part in rest.split("^")[:2] if part)
    family, given = family.strip(), given.strip()
    return f"{family}, {given}" if family and given else (family or given)
