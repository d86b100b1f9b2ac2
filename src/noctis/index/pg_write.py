"""The index write on PostgreSQL: one call of the function ``noctis_write_instance``.

Migration 0004 defines the function (0003 its first version); it does what
`noctis.index.upsert.write_instance` does on SQLite, in one round trip instead of four to eight
(each a wait for the server and for the GIL).
Called on an autocommit connection, the call is its own transaction: it returns once the
index row is durable, or raises and leaves nothing behind.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from noctis.dicom.header import InstanceHeader
from noctis.index.driver import DriverStatement

# The function's parameters, in its declaration's order, without the "p_" prefix.
_PARAMETERS: Final = (
    "facility_id",
    "patient_id",
    "issuer_of_patient_id",
    "patient_name",
    "patient_birth_date",
    "patient_sex",
    "study_instance_uid",
    "study_date",
    "study_time",
    "accession_number",
    "study_id",
    "study_description",
    "referring_physician_name",
    "series_instance_uid",
    "modality",
    "series_number",
    "series_description",
    "body_part_examined",
    "series_date",
    "series_time",
    "sop_instance_uid",
    "sop_class_uid",
    "instance_number",
    "transfer_syntax_uid",
    "rows",
    "columns",
    "number_of_frames",
    "pixel_data_offset",
    "object_key",
    "size_bytes",
    "sha256",
    "now",
    "replace",
)
_CALL: Final = DriverStatement(
    text(
        "SELECT replaced_key, series_instances, conflict_with, stored_patient_name,"
        " stored_patient_birth_date, stored_patient_sex FROM noctis_write_instance("
        + ", ".join(f"p_{name} => :{name}" for name in _PARAMETERS)
        + ")"
    )
)
_HEADER_FIELDS: Final = frozenset(InstanceHeader.__dataclass_fields__) & frozenset(_PARAMETERS)

# SQLSTATEs the function raises for an instance that is already indexed.
SAME_CONTENT: Final = "NX001"
DIFFERENT_CONTENT: Final = "NX002"
MOVED_INSTANCE: Final = "NX003"
SERIES_OF_ANOTHER_STUDY: Final = "NX004"  # DETAIL: the UID of the study it is filed under
STUDY_OF_ANOTHER_PATIENT: Final = "NX005"
_REFUSALS: Final = frozenset(
    {
        SAME_CONTENT,
        DIFFERENT_CONTENT,
        MOVED_INSTANCE,
        SERIES_OF_ANOTHER_STUDY,
        STUDY_OF_ANOTHER_PATIENT,
    }
)


class AlreadyIndexed(Exception):
    """The function refused: ``sqlstate`` says why; ``detail`` is the object key (same
    content) or the study the series is filed under (series of another study)."""

    def __init__(self, sqlstate: str, detail: str | None) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate
        self.detail = detail


def call_write_instance(
    conn: Connection,
    facility_id: int,
    header: InstanceHeader,
    *,
    object_key: str,
    size: int,
    sha256: str,
    now: datetime,
    replace: bool,
) -> tuple[Any, ...]:
    """The function's row: replaced object key, the series' instance count, and, when the
    instance's demographics differ from those stored, what they were compared with ("patient"
    or "study") and the stored name, birth date and sex (None otherwise).

    ``conn`` should be in autocommit mode; inside a transaction the call is part of it.
    """
    values: dict[str, Any] = {name: getattr(header, name) for name in _HEADER_FIELDS}
    values.update(
        facility_id=facility_id,
        object_key=object_key,
        size_bytes=size,
        sha256=sha256,
        now=now,
        replace=replace,
    )
    try:
        row = _CALL.first(conn, values)
    except DBAPIError as exc:
        sqlstate = getattr(exc.orig, "sqlstate", None)
        if sqlstate in _REFUSALS:
            detail = getattr(getattr(exc.orig, "diag", None), "message_detail", None)
            raise AlreadyIndexed(sqlstate, detail) from exc
        raise
    if row is None:
        raise LookupError("noctis_write_instance returned no row")
    return row
