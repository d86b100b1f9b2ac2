"""Series metadata bundles: the WADO-RS metadata of a whole series as one derivative object.

The API builds each instance's DICOM JSON from a ranged read of its header and caches it per
process, so the first request for a 300-instance series in each API replica costs 300 reads.
The worker writes the fragments of a series into one object
(``noctis.dicom.metadata.bundle_key``), which the API reads instead.

Debounced, so a 300-instance series is built about once, not 300 times:

- ``instance_stored`` (after every stored instance) reads the series' state from the index
  (instance count and last update) and schedules ``series_metadata`` QUIET_SECONDS later,
  carrying that state;
- ``series_metadata`` gives way when the series changed since (a later instance arrived, and
  its own task is scheduled after this one), and skips when the bundle already holds every
  instance the index lists. Otherwise it rebuilds, reusing the fragments the old bundle has
  and reading only the new instances' headers.

No clocks are compared (the index, the SCP and the worker may disagree on the time), and no
lock is needed: object keys name immutable contents, so a bundle written by a task that
raced another may be incomplete -- the API reads what it lacks from the headers -- but is
never wrong.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Select, bindparam, select
from sqlalchemy.orm import Session

from noctis.core.queue import SERIES_METADATA, facility_queue
from noctis.core.runtime import Runtime
from noctis.dicom.metadata import (
    BUNDLE_MINIMUM,
    InvalidBundle,
    bundle_key,
    decode_bundle,
    encode_bundle,
    instance_fragment,
    instance_path,
)
from noctis.index.models import Facility, Instance, Series, Study
from noctis.storage import ObjectNotFound, ObjectStore, StorageUnavailable

log = logging.getLogger(__name__)

# A series is built once no instance has arrived for this long.
QUIET_SECONDS = 3.0


def instance_stored(
    runtime: Runtime,
    *,
    facility: str,
    study_instance_uid: str,
    series_instance_uid: str,
    **_: Any,
) -> None:
    """Schedule the series' metadata bundle for when the series has gone quiet."""
    with runtime.reading() as conn:
        state = _series_state(conn, facility, study_instance_uid, series_instance_uid)
    if state is None:
        return  # removed since
    if int(state.split("@", 1)[0]) < BUNDLE_MINIMUM:
        return  # the API reads a few headers as fast as one bundle
    runtime.queue.send(
        SERIES_METADATA,
        queue=facility_queue(facility),
        delay=QUIET_SECONDS,
        facility=facility,
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        state=state,
    )


def series_metadata(
    runtime: Runtime,
    *,
    facility: str,
    study_instance_uid: str,
    series_instance_uid: str,
    state: str | None = None,
    **_: Any,
) -> str:
    """Write the series' metadata bundle unless a later task will, or it is up to date.

    ``state`` is the series' state when the task was scheduled (None: build regardless of
    later changes). Returns what happened: built, current, superseded or gone.
    """
    with runtime.reader() as session:
        now = _series_state(session.connection(), facility, study_instance_uid, series_instance_uid)
        if now is None:
            return "gone"
        if state is not None and now != state:
            return "superseded"  # still receiving: the task of its latest instance builds it
        members = _members(session, facility, study_instance_uid, series_instance_uid)
    key = bundle_key(facility, study_instance_uid, series_instance_uid)
    existing = _existing(runtime.store, key)
    if all(m.object_key in existing for m in members):
        return "current"
    fragments, read = _fragments(
        runtime.store, study_instance_uid, series_instance_uid, members, existing
    )
    data = encode_bundle(fragments)
    runtime.store.put(key, io.BytesIO(data), len(data))
    log.info(
        "series metadata bundle %s: %d instances, %d headers read, %d bytes",
        key,
        len(fragments),
        read,
        len(data),
    )
    return "built"


@dataclass(frozen=True)
class _Member:
    sop_uid: str
    object_key: str
    pixel_data_offset: int | None
    transfer_syntax_uid: str


def _series_state(conn: Connection, facility: str, study_uid: str, series_uid: str) -> str | None:
    """Changes with every instance added to the series; None when there is no such series."""
    row = conn.execute(
        _series_state_query(), {"facility": facility, "study": study_uid, "series": series_uid}
    ).first()
    if row is None:
        return None
    count, updated_at = row
    return f"{count}@{updated_at.isoformat() if updated_at else ''}"


@cache
def _series_state_query() -> Select[tuple[int, datetime]]:
    # Built once: this runs for every series notice, on the SCP's process when embedded.
    return (
        select(Series.number_of_instances, Series.updated_at)
        .join(Study, Series.study_pk == Study.id)
        .join(Facility, Series.facility_id == Facility.id)
        .where(
            Facility.name == bindparam("facility"),
            Series.series_instance_uid == bindparam("series"),
            Study.study_instance_uid == bindparam("study"),
        )
    )


def _members(session: Session, facility: str, study_uid: str, series_uid: str) -> list[_Member]:
    rows = session.execute(
        select(
            Instance.sop_instance_uid,
            Instance.object_key,
            Instance.pixel_data_offset,
            Instance.transfer_syntax_uid,
        )
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .join(Facility, Series.facility_id == Facility.id)
        .where(
            Facility.name == facility,
            Series.series_instance_uid == series_uid,
            Study.study_instance_uid == study_uid,
        )
        .order_by(Instance.instance_number, Instance.id)
    )
    return [_Member(*row) for row in rows]


def _existing(store: ObjectStore, key: str) -> dict[str, bytes]:
    try:
        return decode_bundle(store.get(key))
    except ObjectNotFound:
        return {}
    except InvalidBundle as exc:
        log.warning("replacing series metadata bundle %s: %s", key, exc)
        return {}


def _fragments(
    store: ObjectStore,
    study_uid: str,
    series_uid: str,
    members: list[_Member],
    existing: dict[str, bytes],
) -> tuple[dict[str, bytes], int]:
    """object key -> fragment for the members (reused when the old bundle has it), and how
    many headers were read. An instance that cannot be read is left out: the API reads it
    itself, and reports it."""
    fragments: dict[str, bytes] = {}
    read = 0
    for member in members:
        fragment = existing.get(member.object_key)
        if fragment is None:
            try:
                fragment = instance_fragment(
                    store,
                    member.object_key,
                    member.pixel_data_offset,
                    member.transfer_syntax_uid,
                    instance_path(study_uid, series_uid, member.sop_uid),
                )
            except ObjectNotFound:
                log.warning("object %s of a series member is missing", member.object_key)
                continue
            except StorageUnavailable:
                raise  # the task fails; the next instance stored schedules it again
            except Exception:
                log.exception("cannot build the metadata of instance %s", member.sop_uid)
                continue
            read += 1
        fragments[member.object_key] = fragment
    return fragments, read
