"""Series thumbnails rendered by the worker when a study becomes stable.

For each series with images, the thumbnail WADO-RS ``/thumbnail`` would render by default
(``noctis.dicom.thumbnail``) is written next to the series' metadata bundle, unless it is
there already; the API serves it instead of rendering. Objects without a pixel data offset
(deflated ones) are left to the API, which renders them on demand as before.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from noctis.core.runtime import Runtime
from noctis.dicom.thumbnail import render_thumbnail, representative, thumbnail_key
from noctis.index.models import Facility, Instance, Series, Study
from noctis.storage import StorageUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Image:
    series_uid: str
    object_key: str
    pixel_data_offset: int | None
    size: int


def study_thumbnails(runtime: Runtime, facility: str, study_uid: str) -> dict[str, str]:
    """Make the thumbnail of every series of the study; series UID -> what happened
    (made, present, skipped, failed)."""
    with runtime.reader() as session:
        by_series = _images(session, facility, study_uid)
    outcome: dict[str, str] = {}
    for series_uid, images in by_series.items():
        image = representative(images)
        key = thumbnail_key(facility, study_uid, series_uid, image.object_key)
        if runtime.store.exists(key):
            outcome[series_uid] = "present"
            continue
        if image.pixel_data_offset is None:
            outcome[series_uid] = "skipped"  # deflated: the API renders it on demand
            continue
        try:
            data = render_thumbnail(
                runtime.store, image.object_key, image.pixel_data_offset, image.size
            )
        except StorageUnavailable:
            raise  # the task fails; the stable sweep sends it again
        except Exception:
            log.warning("cannot render the thumbnail of %s", image.object_key, exc_info=True)
            outcome[series_uid] = "failed"
            continue
        runtime.store.put(key, io.BytesIO(data), len(data))
        outcome[series_uid] = "made"
    return outcome


def _images(session: Session, facility: str, study_uid: str) -> dict[str, list[_Image]]:
    """The study's images by series, in the order the API reads them (series number, then
    instance number)."""
    rows = session.execute(
        select(
            Series.series_instance_uid,
            Instance.object_key,
            Instance.pixel_data_offset,
            Instance.size_bytes,
        )
        .select_from(Study)
        .join(Facility, Study.facility_id == Facility.id)
        .join(Series, Series.study_pk == Study.id)
        .join(Instance, Instance.series_pk == Series.id)
        .where(
            Facility.name == facility,
            Study.study_instance_uid == study_uid,
            Instance.rows.is_not(None),
            Instance.rows > 0,
        )
        .order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)
    )
    found: dict[str, list[_Image]] = {}
    for series_uid, object_key, offset, size in rows:
        found.setdefault(series_uid, []).append(_Image(series_uid, object_key, offset, size))
    return found
