"""Which instances a route matches, and which instances a route has not looked at yet.

Criteria are checked against the index where it has the attribute (Modality, the study's
attributes), the audit trail for the calling AE (stores are audited per association and study,
so ``callingAETitles`` holds when any AE matching it sent instances of the study), and the
stored header for any other attribute (read up to the pixel data, only for routes that ask).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from noctis.core.audit import AuditAction
from noctis.core.runtime import Runtime
from noctis.dicom.header import read_header
from noctis.index.accounts import AuditRow
from noctis.index.models import Instance, Series, Study, utcnow
from noctis.specs.route import RouteMatch

log = logging.getLogger(__name__)

# A per-instance route looks at an instance once it was stored this long ago (new_candidates).
SETTLE_SECONDS = 0.5
# A per-instance route on the calling AE waits for the store's audit event (written when the
# association ends) at most this long; after that the instance is judged without it.
SENDER_WAIT_SECONDS = 600.0

# Attributes the index holds, so matching them reads no header.
_INDEXED = {
    0x00080060: Series.modality,
    0x0008103E: Series.series_description,
    0x00180015: Series.body_part_examined,
    0x00200011: Series.series_number,
    0x00080016: Instance.sop_class_uid,
    0x00100020: Study.patient_id,
    0x00100010: Study.patient_name,
    0x00080050: Study.accession_number,
    0x00081030: Study.study_description,
    0x00080020: Study.study_date,
    0x00080090: Study.referring_physician_name,
    0x0020000D: Study.study_instance_uid,
}


@dataclass(frozen=True)
class Candidate:
    """An instance a route may forward, with what the index knows of it."""

    instance_id: int
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    object_key: str
    pixel_data_offset: int | None
    created_at: datetime
    indexed: dict[int, str]


def _candidates(query: Select[Any]) -> Select[Any]:
    return query.add_columns(*_INDEXED.values())


def _base_query() -> Select[Any]:
    return _candidates(
        select(
            Instance.id,
            Study.study_instance_uid,
            Series.series_instance_uid,
            Instance.sop_instance_uid,
            Instance.object_key,
            Instance.pixel_data_offset,
            Instance.created_at,
        )
        .join(Series, Series.id == Instance.series_pk)
        .join(Study, Study.id == Series.study_pk)
    )


def _candidate(row: Sequence[Any]) -> Candidate:
    values = row[7:]
    indexed = {
        tag: "" if value is None else str(value)
        for tag, value in zip(_INDEXED, values, strict=True)
    }
    return Candidate(row[0], row[1], row[2], row[3], row[4], row[5], row[6], indexed)


def study_candidates(session: Session, facility_id: int, study_uid: str) -> list[Candidate]:
    query = _base_query().where(
        Study.facility_id == facility_id, Study.study_instance_uid == study_uid
    )
    return [_candidate(row) for row in session.execute(query.order_by(Instance.id))]


def new_candidates(session: Session, facility_id: int, after: int, limit: int) -> list[Candidate]:
    """Instances stored after instance ``after``, oldest first. Only those stored SETTLE
    seconds ago or more: on PostgreSQL a transaction that took a lower id may commit after one
    that took a higher id, and a scan must not move past an instance it has not seen yet."""
    settled = utcnow() - timedelta(seconds=SETTLE_SECONDS)
    query = _base_query().where(
        Instance.facility_id == facility_id, Instance.id > after, Instance.created_at <= settled
    )
    return [_candidate(row) for row in session.execute(query.order_by(Instance.id).limit(limit))]


def _matches_any(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(value.strip(), pattern.strip()) for pattern in patterns)


def _calling_aes(session: Session, facility_id: int, study_uid: str) -> set[str]:
    return set(
        session.scalars(
            select(AuditRow.actor)
            .distinct()
            .where(
                AuditRow.facility_id == facility_id,
                AuditRow.study_instance_uid == study_uid,
                AuditRow.action == AuditAction.STORE.value,
                AuditRow.actor_type == "ae",
            )
        )
    )


class Matcher:
    """One route's match, applied to the candidates of one facility (caching per study)."""

    def __init__(self, runtime: Runtime, session: Session, facility_id: int, match: RouteMatch):
        self.runtime = runtime
        self.session = session
        self.facility_id = facility_id
        self.match = match
        self.patterns = match.attribute_patterns()
        self._senders: dict[str, set[str]] = {}

    def undecided(self, candidate: Candidate) -> bool:
        """The calling AE is asked for and the store of this study has not been audited yet
        (its association is still open)."""
        if not self.match.calling_ae_titles:
            return False
        return not self._senders_of(candidate.study_instance_uid)

    def _senders_of(self, study: str) -> set[str]:
        if study not in self._senders:
            self._senders[study] = _calling_aes(self.session, self.facility_id, study)
        return self._senders[study]

    def __call__(self, candidate: Candidate) -> bool:
        match = self.match
        if match.modalities and not _matches_any(candidate.indexed[0x00080060], match.modalities):
            return False
        if match.calling_ae_titles:
            senders = self._senders_of(candidate.study_instance_uid)
            if not any(_matches_any(ae, match.calling_ae_titles) for ae in senders):
                return False
        unindexed = {t: p for t, p in self.patterns.items() if t not in candidate.indexed}
        for tag, patterns in self.patterns.items():
            if tag in candidate.indexed and not _matches_any(candidate.indexed[tag], patterns):
                return False
        if unindexed:
            header = self._header(candidate)
            for tag, patterns in unindexed.items():
                element = header.get(tag) if header is not None else None
                value = "" if element is None or element.value is None else str(element.value)
                if not _matches_any(value, patterns):
                    return False
        return True

    def _header(self, candidate: Candidate) -> Any:
        store = self.runtime.store
        try:
            if candidate.pixel_data_offset:
                data = store.get_range(candidate.object_key, 0, candidate.pixel_data_offset)
            else:
                data = store.get(candidate.object_key)
            return read_header(io.BytesIO(data))[0]
        except Exception:
            log.warning(
                "route: cannot read the header of %s; it does not match",
                candidate.sop_instance_uid,
                exc_info=True,
            )
            return None


def decided(matcher: Matcher, candidates: list[Candidate]) -> list[Candidate]:
    """The candidates up to the first one whose sender is not known yet (the scan resumes
    there at its next tick), unless that one has waited SENDER_WAIT_SECONDS already."""
    patience = datetime.now(UTC) - timedelta(seconds=SENDER_WAIT_SECONDS)
    for index, candidate in enumerate(candidates):
        created = candidate.created_at
        if created.tzinfo is None:  # SQLite hands back naive UTC
            created = created.replace(tzinfo=UTC)
        if created > patience and matcher.undecided(candidate):
            return candidates[:index]
    return candidates
