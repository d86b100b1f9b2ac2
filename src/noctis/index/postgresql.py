"""The index on PostgreSQL (production): several processes write at once; row locks order them.

An instance is indexed in one round trip, one call of the PL/pgSQL function
``noctis_write_instance`` (`sql/write_instance.sql`, loaded by migration 0007), which does what
`noctis.index.sqlite_write` does on SQLite, in the server, instead of four to eight round trips
(each a wait for the server and for the GIL). Called on an autocommit connection, the call is
its own transaction: it returns once the index row is durable, or raises and leaves nothing
behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from noctis.dicom.header import InstanceHeader
from noctis.index.backend import (
    DemographicsConflict,
    DifferentContent,
    IndexBackend,
    IndexedInstance,
    InstanceRecord,
    MovedInstance,
    SameContent,
    SeriesOfAnotherStudy,
    StudyOfAnotherPatient,
)
from noctis.index.driver import DriverStatement

log = logging.getLogger(__name__)

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


class PostgresqlIndex(IndexBackend):
    name = "postgresql"
    insert = staticmethod(postgresql.insert)
    # Autocommit: a read costs no BEGIN and ROLLBACK round trips (READ COMMITTED takes a
    # snapshot per statement either way).
    read_options = {"isolation_level": "AUTOCOMMIT"}

    @classmethod
    def open(cls, url: str, *, pool_size: int = 5) -> PostgresqlIndex:
        return cls(make_engine(url, pool_size=pool_size))

    def write_instance(self, record: InstanceRecord) -> IndexedInstance:
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            replaced_key, series_instances, compared_with, *stored = call_write_instance(
                conn, record
            )
        conflict = DemographicsConflict(compared_with, *stored) if compared_with else None
        return IndexedInstance(replaced_key, series_instances, conflict)

    def best_effort_sessions(self, wait_seconds: float) -> sessionmaker[Session]:
        return self.sessions  # row locks: a short insert never queues behind a whole store


def call_write_instance(conn: Connection, record: InstanceRecord) -> tuple[Any, ...]:
    """The function's row: replaced object key, the series' instance count, and, when the
    instance's demographics differ from those stored, what they were compared with ("patient"
    or "study") and the stored name, birth date and sex (None otherwise). Raises the
    refusals of `noctis.index.backend`.

    ``conn`` should be in autocommit mode; inside a transaction the call is part of it.
    """
    values: dict[str, Any] = {name: getattr(record.header, name) for name in _HEADER_FIELDS}
    values.update(
        facility_id=record.facility_id,
        object_key=record.object_key,
        size_bytes=record.size,
        sha256=record.sha256,
        now=record.received_at,
        replace=record.replace,
    )
    try:
        row = _CALL.first(conn, values)
    except DBAPIError as exc:
        refusal = _refusal(exc, record)
        if refusal is not None:
            raise refusal from exc
        raise
    if row is None:
        raise LookupError("noctis_write_instance returned no row")
    return row


def _refusal(exc: DBAPIError, record: InstanceRecord) -> Exception | None:
    """The function's refusal (a SQLSTATE of its own) as the backend's exception, or None."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    # DETAIL: the object key (NX001) or the UID of the study the series is filed under (NX004).
    detail = getattr(getattr(exc.orig, "diag", None), "message_detail", None) or ""
    header = record.header
    refusals: dict[str | None, Callable[[], Exception]] = {
        "NX001": lambda: SameContent(detail),
        "NX002": lambda: DifferentContent(header.sop_instance_uid),
        "NX003": lambda: MovedInstance(header.sop_instance_uid),
        "NX004": lambda: SeriesOfAnotherStudy(detail),
        "NX005": lambda: StudyOfAnotherPatient(header.study_instance_uid),
    }
    make = refusals.get(sqlstate)
    return make() if make is not None else None


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
    )
    ping_idle_connections(engine)
    event.listen(engine, "connect", _durable_commits)
    return engine


def _durable_commits(dbapi_connection: Any, _record: Any) -> None:
    """A commit the archive acknowledges must be on disk: never run with synchronous_commit
    off, whatever the server, database or role default says (``local``, ``on``,
    ``remote_write`` and ``remote_apply`` are all durable on this server, and are kept)."""
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        row = cursor.fetchone()
        if row is not None and row[0] == "off":
            log.warning("synchronous_commit is off for this database: the archive turns it on")
            cursor.execute("SET synchronous_commit TO on")
    dbapi_connection.commit()


# A pooled connection used less than this long ago is taken to be alive.
PING_AFTER_IDLE_SECONDS = 1.0
_IDLE_SINCE = "noctis_idle_since"


def ping_idle_connections(engine: Engine, idle_seconds: float = PING_AFTER_IDLE_SECONDS) -> None:
    """Check a pooled connection before it is used again, if it sat idle for a while.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: one more round trip for each of
    the two a store makes. A connection that served a request a moment ago is alive; one that
    sat idle may have been cut by a server restart or a firewall, and a failed ping makes the
    pool replace it before anyone uses it (SQLAlchemy's pessimistic disconnect handling).
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out another (or a new one).
            raise DisconnectionError(f"pooled connection is dead: {type(exc).__name__}") from exc
