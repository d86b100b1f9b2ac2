"""Person names as the pages, report PDFs and notification titles show them."""

from __future__ import annotations

import pytest

from noctis.dicom.person_names import readable_person_name


@pytest.mark.parametrize(
    ("dicom", "readable"),
    [
        ("Doe^Jane", "Doe, Jane"),
        ("Doe^Jane^Quinn^Dr^Jr", "Doe, Jane Quinn"),
        ("Doe", "Doe"),
        ("^Jane", "Jane"),
        ("", ""),
        ("Yamada^Tarou=山田^太郎=やまだ^たろう", "Yamada, Tarou"),
    ],
)
def test_a_dicom_person_name_reads_as_people_write_it(dicom: str, readable: str) -> None:
    assert readable_person_name(dicom) == readable
