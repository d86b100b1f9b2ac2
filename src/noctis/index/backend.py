"""The index's one interface: what callers ask of the database, whichever database it is.

`noctis.index.db.open_index` picks the implementation once, from the database URL, when the
runtime opens: `noctis.index.sqlite.SqliteIndex` or `noctis.index.postgresql.PostgresqlIndex`.
Callers hold an `IndexBackend` and never ask which one it is; what differs between the two
databases (how an instance is written, which INSERT dialect counts a login attempt, how a
writer waits for SQLite's one write lock) lives in the implementations.

Filing rules of `write_instance` (each refusal leaves nothing behind):
- A series belongs to the study it was first filed under: an instance naming it with another
  Study Instance UID is refused (`SeriesOfAnotherStudy`), never filed under that study.
- A study belongs to the patient it was first filed under, (PatientID, IssuerOfPatientID): an
  instance of it naming another is refused (`StudyOfAnotherPatient`).
- A patient is one row per (facility, PatientID, IssuerOfPatientID); an empty PatientID never
  merges: each such study gets a patient of its own.
- Each study keeps the patient attributes it arrived with. Demographics that differ from the
  stored ones (the patient's, for a new study; the study's, for another of its instances)
  change nothing and are returned (`DemographicsConflict`) for the caller to record.
- An instance already indexed: the same data set raises `SameContent`; another one raises
  `DifferentContent` unless the record may replace it, and `MovedInstance` if the replacement
  names another series.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import Connection, DateTime, Engine, bindparam, case, literal, select, text
from sqlalchemy.orm import Session, sessionmaker

from noctis.dicom.header import InstanceHeader
from noctis.index.accounts import LoginLockout
from noctis.index.driver import DriverStatement
from noctis.index.models import Instance

# The execution option of read-only sessions (`IndexBackend.reader`).
READ_ONLY = "noctis_read_only"


class IndexUnavailable(RuntimeError):
    """The index database could not be reached."""


@dataclass(frozen=True)
class InstanceRecord:
    """One stored object to index: where it is filed (the facility and the instance's header),
    what was stored (object key, size, the data set's SHA-256), when it was received, and
    whether it may replace another data set indexed under the same SOP Instance UID."""

    facility_id: int
    header: InstanceHeader
    object_key: str
    size: int
    sha256: str
    received_at: datetime
    replace: bool


@dataclass(frozen=True)
class DemographicsConflict:
    """Stored demographics that differ from an instance's: compared with the ``patient`` row
    (a new study of a known patient) or the ``study`` row (another instance of a study)."""

    compared_with: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str


@dataclass(frozen=True)
class IndexedInstance:
    replaced_key: str | None  # the object the index no longer references, if any
    series_instances: int | None = None  # the series' instance count after this write
    conflict: DemographicsConflict | None = None  # to record for reconciliation


@dataclass(frozen=True)
class StoredContent:
    """What the index holds for a SOP Instance UID: enough to tell a duplicate."""

    object_key: str
    sha256: str


class SameContent(Exception):
    """The instance is already indexed with this very data set (a concurrent duplicate)."""

    def __init__(self, object_key: str) -> None:
        super().__init__(object_key)
        self.object_key = object_key


class DifferentContent(Exception):
    """The instance is already indexed with another data set and replacing is not allowed."""


class MovedInstance(Exception):
    """A replacement would move the instance to another series."""


class SeriesOfAnotherStudy(Exception):
    """The instance's series is filed under another study (``study_instance_uid``)."""

    def __init__(self, study_instance_uid: str) -> None:
        super().__init__(study_instance_uid)
        self.study_instance_uid = study_instance_uid


class StudyOfAnotherPatient(Exception):
    """The instance's study is filed under another (PatientID, IssuerOfPatientID)."""


_INSTANCE = Instance.__table__
_STORED_CONTENT = DriverStatement(
    select(_INSTANCE.c.object_key, _INSTANCE.c.sha256).where(
        _INSTANCE.c.facility_id == bindparam("facility_id"),
        _INSTANCE.c.sop_instance_uid == bindparam("sop_instance_uid"),
    )
)
_LOCKOUT = LoginLockout.__table__


class IndexBackend(ABC):
    """The index on one database: its engine, its sessions, and the operations whose SQL or
    transaction handling differs between databases."""

    name: ClassVar[str]  # the database's name, for diagnostics
    # The dialect's INSERT construct (with ON CONFLICT): sqlite.insert or postgresql.insert.
    insert: ClassVar[Callable[..., Any]]
    # Execution options of read-only sessions, beside READ_ONLY.
    read_options: ClassVar[dict[str, object]] = {}

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions: sessionmaker[Session] = sessionmaker(engine, expire_on_commit=False)
        # Read-only sessions: on SQLite they never wait for (or block) a writer.
        self.reader: sessionmaker[Session] = sessionmaker(
            engine.execution_options(**{READ_ONLY: True, **self.read_options}),
            expire_on_commit=False,
        )

    @abstractmethod
    def write_instance(self, record: InstanceRecord) -> IndexedInstance:
        """Index one stored object in a transaction of its own: durable when this returns,
        nothing left behind when it raises (see the module's filing rules)."""

    @abstractmethod
    def best_effort_sessions(self, wait_seconds: float) -> sessionmaker[Session]:
        """Sessions for short writes that must not queue for long behind other writers and
        need to survive a crash of the process, not a power loss (audit rows of reads).
        Sessions of their own engine, disposed of by `close_sessions`, or `sessions`."""

    def close_sessions(self, sessions: sessionmaker[Session]) -> None:
        """Dispose of sessions made by `best_effort_sessions` (not of `sessions`)."""
        if sessions is not self.sessions:
            bind = sessions.kw.get("bind")
            if isinstance(bind, Engine):
                bind.dispose()

    def find_content(self, facility_id: int, sop_instance_uid: str) -> StoredContent | None:
        """What is indexed under a SOP Instance UID (ingest's duplicate check), read without
        waiting for a writer."""
        with self.reading() as conn:
            row = _STORED_CONTENT.first(
                conn, {"facility_id": facility_id, "sop_instance_uid": sop_instance_uid}
            )
        return StoredContent(*row) if row is not None else None

    def count_login_attempt(
        self, session: Session, username: str, client: str, moment: datetime, window: timedelta
    ) -> tuple[int, datetime]:
        """Count one login attempt of ``username`` from ``client`` in one atomic upsert: the
        attempts counted in the window, and when the window began (a new one at ``moment``
        if the last began ``window`` ago or more)."""
        started = literal(moment, DateTime(timezone=True))
        expired = _LOCKOUT.c.window_start <= literal(moment - window, DateTime(timezone=True))
        statement = (
            self.insert(_LOCKOUT)
            .values(username=username, client=client, attempts=1, window_start=moment)
            .on_conflict_do_update(
                index_elements=[_LOCKOUT.c.username, _LOCKOUT.c.client],
                set_={
                    "attempts": case((expired, 1), else_=_LOCKOUT.c.attempts + 1),
                    "window_start": case((expired, started), else_=_LOCKOUT.c.window_start),
                },
            )
            .returning(_LOCKOUT.c.attempts, _LOCKOUT.c.window_start)
        )
        attempts, window_start = session.execute(statement).one()
        return int(attempts), window_start

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only Core connection (no ORM session), rolled back at the end."""
        with self.reader.kw["bind"].connect() as conn:
            try:
                yield conn
            finally:
                conn.rollback()

    def check(self) -> None:
        """Raise IndexUnavailable unless the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # any driver error means "not ready"
            raise IndexUnavailable(f"index database unreachable: {type(exc).__name__}") from exc

    def close(self) -> None:
        self.engine.dispose()
