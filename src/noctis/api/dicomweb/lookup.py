"""Finding stored instances for WADO-RS, within the facilities a caller may see.

Retrieval is by UID, not attribute matching, so it reads the index directly; QIDO goes
through the shared matching code in ``noctis.index.query``. Every lookup takes the caller's
facility set: an instance of another facility is simply not found.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Connection, Select, bindparam, select
from sqlalchemy.orm import Session

from noctis.index.models import Facility, Instance, Series, Study


@dataclass(frozen=True)
class StoredInstance:
    pk: int
    facility_id: int
    facility: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    object_key: str
    size: int
    pixel_data_offset: int | None
    number_of_frames: int | None
    rows: int | None
    columns: int | None

    @property
    def path(self) -> str:
        return f"/studies/{self.study_uid}/series/{self.series_uid}/instances/{self.sop_uid}"


_COLUMNS = (
    Instance.id,
    Instance.facility_id,
    Facility.name,
    Study.study_instance_uid,
    Series.series_instance_uid,
    Instance.sop_instance_uid,
    Instance.sop_class_uid,
    Instance.transfer_syntax_uid,
    Instance.object_key,
    Instance.size_bytes,
    Instance.pixel_data_offset,
    Instance.number_of_frames,
    Instance.rows,
    Instance.columns,
)


@cache
def _statement(
    by_series: bool, by_sop: bool, within: bool, outside: bool
) -> Select[*tuple[Any, ...]]:
    """The look-up for one shape of path, built once: bind parameters ``study``, ``series``,
    ``sop`` and ``facilities`` (expanding) as the shape needs them."""
    # Driven from the study (its UID is indexed) and filtered by the study's facility: an
    # instance always belongs to its study's facility, and a filter on the instance's
    # facility leads SQLite to scan every instance of the facility instead.
    statement = (
        select(*_COLUMNS)
        .select_from(Study)
        .join(Series, Series.study_pk == Study.id)
        .join(Instance, Instance.series_pk == Series.id)
        .join(Facility, Study.facility_id == Facility.id)
        .where(Study.study_instance_uid == bindparam("study"))
    )
    if by_series:
        statement = statement.where(Series.series_instance_uid == bindparam("series"))
    if by_sop:
        statement = statement.where(Instance.sop_instance_uid == bindparam("sop"))
    facilities = bindparam("facilities", expanding=True)
    if within:
        statement = statement.where(Study.facility_id.in_(facilities))
    if outside:
        statement = statement.where(Study.facility_id.not_in(facilities)).limit(1)
    else:
        statement = statement.order_by(
            Study.id, Series.series_number, Series.id, Instance.instance_number, Instance.id
        )
    return statement


def _params(
    facility_ids: Collection[int] | None, study: str, series: str | None, sop: str | None
) -> dict[str, Any]:
    params: dict[str, Any] = {"study": study, "series": series, "sop": sop}
    if facility_ids is not None:
        params["facilities"] = sorted(facility_ids)
    return params


def find_instances(
    session: Session | Connection,
    facility_ids: Collection[int] | None,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> list[StoredInstance]:
    """Instances of a study / series / one instance, in series then instance order."""
    statement = _statement(
        series_uid is not None, sop_uid is not None, facility_ids is not None, False
    )
    rows = session.execute(statement, _params(facility_ids, study_uid, series_uid, sop_uid))
    return [StoredInstance(*row) for row in rows]  # type: ignore[arg-type]


def hidden_from(
    session: Session | Connection,
    facility_ids: Collection[int] | None,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> int | None:
    """A facility holding the resource that the caller may not see (for the audit trail)."""
    if facility_ids is None:
        return None
    statement = _statement(series_uid is not None, sop_uid is not None, False, True)
    row = session.execute(statement, _params(facility_ids, study_uid, series_uid, sop_uid)).first()
    return int(row[1]) if row is not None else None
