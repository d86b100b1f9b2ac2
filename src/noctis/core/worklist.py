"""The reading worklist: how studies get onto it, and what people do there besides the
workflow's own changes (`noctis.core.workflow`): find a study they may see, check an
assignee, write notes.

Arrival: every study gets its workflow row (state ``arrived``) from `ArrivalScan`, a periodic
job of every worker process (`noctis.worker.arrival`), not from a message a crash could lose.
A full pass (one anti-join over every study) runs first and then every ``FULL_PASS_SECONDS``;
the passes between look only at study keys above a watermark, so an idle pass over 100,000
studies reads a few index entries. The watermark is the highest key seen at a pass at least
``SETTLE_SECONDS`` old, less ``TRAILING_KEYS``: PostgreSQL draws a key from its sequence
before the study commits, so a study may commit after one with a higher key; SQLite gives the
key of a deleted last study to the next one. Either way the study is found at the next pass,
or at worst by the next full pass. When the study becomes stable the worker moves it from
``arrived`` to ``ready`` (`ready_when_stable`).
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from noctis.core.audit import record_change
from noctis.core.roles import READING_ROLES, Role
from noctis.core.runtime import Runtime
from noctis.core.workflow import (
    WORKFLOW_AUDIT_ACTION,
    Actor,
    StudyState,
    advance,
    ensure_workflow,
    ensure_workflows,
)
from noctis.index.accounts import User
from noctis.index.models import Facility, Study
from noctis.index.worklist import (
    NOTE_MAX_CHARS,
    StudyNote,
    highest_study_key,
    studies_without_workflow,
)

log = logging.getLogger(__name__)

SETTLE_SECONDS = 60.0  # longer than any transaction that inserts a study
TRAILING_KEYS = 1_000  # keys below the watermark looked at again on every pass
FULL_PASS_SECONDS = 600.0
SCAN_BATCH = 500
SCAN_MAX_PER_PASS = 10_000
MODALITY = re.compile(r"^[A-Z0-9]{1,16}$")


class WorklistRefused(ValueError):
    """A request the worklist cannot apply as asked (unknown assignee, empty note...)."""


class ArrivalScan:
    """Gives every new study its workflow row; one per process (it keeps the watermark)."""

    def __init__(
        self,
        settle_seconds: float = SETTLE_SECONDS,
        *,
        trailing_keys: int = TRAILING_KEYS,
        full_pass_seconds: float = FULL_PASS_SECONDS,
    ) -> None:
        self._settle = settle_seconds
        self._trailing = trailing_keys
        self._full_every = full_pass_seconds
        self._last_full: float | None = None
        self._watermark = 0
        self._marks: deque[tuple[float, int]] = deque()  # (when, highest key seen then)

    @property
    def floor(self) -> int:
        """Studies with a key above this are looked at by the next pass (unless it is full)."""
        return max(0, self._watermark - self._trailing)

    def run(self, runtime: Runtime) -> int:
        """One pass: the number of studies given a workflow row."""
        started = time.monotonic()
        full = self._last_full is None or started - self._last_full >= self._full_every
        with runtime.reader() as session:
            top = highest_study_key(session)
        made, above, complete = 0, 0 if full else self.floor, False
        while made < SCAN_MAX_PER_PASS:
            with runtime.reader() as session:
                missing = studies_without_workflow(session, above, SCAN_BATCH)
            if missing:
                with runtime.sessions.begin() as session:
                    ensure_workflows(session, missing)
                made += len(missing)
                above = missing[-1]
            if len(missing) < SCAN_BATCH:
                complete = True
                break
        if complete:  # a pass cut short leaves the watermark where it was
            self._marks.append((started, top))
            if full:
                self._last_full = started
        settled = started - self._settle
        while self._marks and self._marks[0][0] <= settled:
            self._watermark = max(self._watermark, self._marks.popleft()[1])
        if made:
            log.info("worklist: %d new studies arrived", made)
        return made


def ready_when_stable(session: Session, study: Study) -> bool:
    """The study is stable: ``arrived`` becomes ``ready`` (another state is left as it is:
    a study claimed while arriving stays in reading). True if it changed."""
    row = ensure_workflow(session, study)
    if row.state != StudyState.ARRIVED.value:
        return False
    advance(session, study, StudyState.READY, actor=Actor.system("stable"))
    return True


def facility_ids_named(
    session: Session, names: Iterable[str], visible: frozenset[int] | None
) -> frozenset[int]:
    """Ids of the facilities named; `WorklistRefused` naming one that does not exist or
    that the caller may not see (the same answer for both)."""
    wanted = set(names)
    statement = select(Facility.name, Facility.id).where(Facility.name.in_(wanted))
    found = {name: facility_id for name, facility_id in session.execute(statement)}
    for name in sorted(wanted):
        if name not in found or (visible is not None and found[name] not in visible):
            raise WorklistRefused(f"no facility named {name!r}")
    return frozenset(found.values())


def check_assignee(session: Session, username: str, facility_id: int) -> None:
    """`WorklistRefused` unless ``username`` is an enabled user who reads studies (a
    radiologist) and may see the facility."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None or not user.enabled:
        raise WorklistRefused(f"no enabled user named {username!r}")
    if Role(user.role) not in READING_ROLES:
        raise WorklistRefused(f"{username} is a {user.role}: only radiologists read studies")
    if not any(grant.facility_id == facility_id for grant in user.grants):
        raise WorklistRefused(f"{username} may not see this study's facility")


def readers_of(session: Session, facility_id: int) -> list[str]:
    """User names a study of the facility may be assigned to."""
    users = session.scalars(select(User).where(User.enabled.is_(True)).order_by(User.username))
    return [
        u.username
        for u in users
        if Role(u.role) in READING_ROLES and any(g.facility_id == facility_id for g in u.grants)
    ]


def add_note(session: Session, study: Study, text: str, *, actor: Actor) -> StudyNote:
    """A note on the study by ``actor``, audited in the same transaction (the audit entry
    keeps the note's id and length, not its text: the note is the record)."""
    text = text.strip()
    if not text:
        raise WorklistRefused("a note needs some text")
    if len(text) > NOTE_MAX_CHARS:
        raise WorklistRefused(f"a note holds at most {NOTE_MAX_CHARS} characters")
    note = StudyNote(
        study_pk=study.id, facility_id=study.facility_id, author=actor.subject, text=text
    )
    session.add(note)
    session.flush()
    record_change(
        session,
        actor,
        WORKFLOW_AUDIT_ACTION,
        "note",
        facility_id=study.facility_id,
        study_instance_uid=study.study_instance_uid,
        note_id=note.id,
        chars=len(text),
    )
    return note


def parse_modalities(values: Iterable[str]) -> tuple[str, ...]:
    result = []
    for value in values:
        for part in value.replace(",", " ").split():
            code = part.upper()
            if not MODALITY.match(code):
                raise WorklistRefused(f"not a modality: {part!r}")
            result.append(code)
    return tuple(dict.fromkeys(result))
