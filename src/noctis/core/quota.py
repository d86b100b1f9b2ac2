"""Facility quotas, enforced in THE write path (`noctis.core.ingest`) before an object is
committed, and each facility's usage as the index counts it.

Cheap on the hot path: a facility's quota, storage pool and usage (studies, bytes: a COUNT and
SUM over its study rows) are read once per ``NOCTIS_QUOTA_REFRESH_SECONDS`` per process, not per
instance; between two reads each process adds the bytes it stores itself. What the cache cannot
see is what *other* processes (other SCP pods, the API's STOW) stored since the last read: that
is the in-flight excess, at most what the whole archive stores for the facility in one refresh
interval (documented in the README). A facility without a quota never pays for the SUM.

Which instance is refused:
- maxBytes: one whose bytes would take the facility's usage past the quota (so a facility at
  its quota stores nothing more);
- maxStudies: one that would open a new study while the facility holds ``maxStudies`` studies;
  the instances of a study already stored are still accepted (a study is never cut in half by
  this quota; maxBytes still applies to them).
Existing data is never touched, and a duplicate of a stored instance is answered before the
check (it stores no new bytes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace

from sqlalchemy import Connection, bindparam, exists, func, select

from noctis.index.models import Facility, Study

_LIMITS = select(Facility.name, Facility.quota_bytes, Facility.quota_studies, Facility.storage_pool)
_LIMITS = _LIMITS.where(Facility.id == bindparam("facility_id"))
_USAGE = select(func.count(Study.id), func.coalesce(func.sum(Study.size_bytes), 0)).where(
    Study.facility_id == bindparam("facility_id")
)
_STUDY_STORED = select(
    exists().where(
        Study.facility_id == bindparam("facility_id"),
        Study.study_instance_uid == bindparam("study_uid"),
    )
)


@dataclass(frozen=True)
class FacilityUsage:
    """One facility's quota, storage pool and usage, as last read (plus this process's
    stores since)."""

    facility_id: int
    name: str
    max_bytes: int | None
    max_studies: int | None
    storage_pool: str | None
    studies: int
    used_bytes: int
    read_at: float  # time.monotonic() of the read

    @property
    def has_quota(self) -> bool:
        return self.max_bytes is not None or self.max_studies is not None

    def exceeded(self) -> list[str]:
        """The quotas the facility is at or over ("maxBytes", "maxStudies")."""
        return quota_exceeded(self.max_bytes, self.max_studies, self.used_bytes, self.studies)


def quota_exceeded(
    max_bytes: int | None, max_studies: int | None, used_bytes: int, studies: int
) -> list[str]:
    """The quotas a facility with this usage is at or over ("maxBytes", "maxStudies")."""
    over = []
    if max_bytes is not None and used_bytes >= max_bytes:
        over.append("maxBytes")
    if max_studies is not None and studies >= max_studies:
        over.append("maxStudies")
    return over


class QuotaExceeded(Exception):
    """The instance would take the facility past a quota; ``str()`` says which and the usage
    (short enough for a DIMSE ErrorComment: 64 characters)."""

    def __init__(self, quota: str, message: str) -> None:
        super().__init__(message)
        self.quota = quota
        self.message = message


class FacilityQuotas:
    """Per-process cache of every facility's quota and usage (thread-safe)."""

    def __init__(
        self,
        reading: Callable[[], AbstractContextManager[Connection]],
        refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reading = reading  # Runtime.reading: a read-only Core connection
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[int, FacilityUsage] = {}

    def usage(self, facility_id: int, *, fresh: bool = False) -> FacilityUsage:
        """The facility's quota and usage, read again when older than the refresh interval
        (or when ``fresh``). Raises LookupError for an unknown facility, SQLAlchemyError when
        the index cannot answer."""
        cached = self._cache.get(facility_id)
        if (
            not fresh
            and cached is not None
            and self._clock() - cached.read_at < self.refresh_seconds
        ):
            return cached
        with self._reading() as conn:
            usage = self._read(conn, facility_id)
        with self._lock:
            self._cache[facility_id] = usage
        return usage

    def _read(self, conn: Connection, facility_id: int) -> FacilityUsage:
        row = conn.execute(_LIMITS, {"facility_id": facility_id}).one_or_none()
        if row is None:
            raise LookupError(f"no facility with id {facility_id}")
        name, max_bytes, max_studies, pool = row
        studies = used = 0
        if max_bytes is not None or max_studies is not None:
            studies, used = conn.execute(_USAGE, {"facility_id": facility_id}).one()
        return FacilityUsage(
            facility_id,
            name,
            max_bytes,
            max_studies,
            pool,
            int(studies),
            int(used),
            self._clock(),
        )

    def check(self, facility_id: int, study_instance_uid: str, size: int) -> FacilityUsage:
        """Raise QuotaExceeded if storing ``size`` more bytes (of the study) would take the
        facility past a quota; the usage it was checked against otherwise."""
        usage = self.usage(facility_id)
        if not usage.has_quota:
            return usage
        if usage.max_bytes is not None and usage.used_bytes + size > usage.max_bytes:
            raise QuotaExceeded(
                "maxBytes",
                f"quota maxBytes: {usage.used_bytes} of {usage.max_bytes} bytes used",
            )
        if (
            usage.max_studies is not None
            and usage.studies >= usage.max_studies
            and not self._study_stored(facility_id, study_instance_uid)
        ):
            raise QuotaExceeded(
                "maxStudies",
                f"quota maxStudies: {usage.studies} of {usage.max_studies} studies used",
            )
        return usage

    def _study_stored(self, facility_id: int, study_instance_uid: str) -> bool:
        # Only asked at the studies quota: a new instance of a stored study is still welcome.
        with self._reading() as conn:
            params = {"facility_id": facility_id, "study_uid": study_instance_uid}
            return bool(conn.execute(_STUDY_STORED, params).scalar())

    def stored(self, facility_id: int, size: int) -> None:
        """This process stored ``size`` new bytes for the facility: count them until the next
        read (new studies are counted by the next read only)."""
        with self._lock:
            cached = self._cache.get(facility_id)
            if cached is not None and cached.has_quota:
                self._cache[facility_id] = replace(cached, used_bytes=cached.used_bytes + size)

    def forget(self) -> None:
        """Drop every cached figure (a facility's quota was changed in this process)."""
        with self._lock:
            self._cache.clear()
