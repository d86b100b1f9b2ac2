"""Thumbnails made ahead of time: where the worker puts them and how it renders one.

A series' thumbnail is its middle image's first frame, fitted in THUMBNAIL_SIZE squared, as
JPEG at the default quality: what WADO-RS ``/thumbnail`` renders when asked for no viewport,
quality or media type other than JPEG. The object key names the series and the object key of
the instance rendered, so a thumbnail never goes stale: once the series' middle image is
another instance (more instances arrived), the API looks for another key, renders on demand
until the worker has made it, and a deleted study's thumbnails go with its ``derived/``
prefix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

from noctis.dicom import render
from noctis.dicom.transcode import exact_reader, image_attributes, locate_frames
from noctis.storage import ObjectStore

THUMBNAIL_SIZE = 128
THUMBNAIL_QUALITY = 90

T = TypeVar("T")


def thumbnail_key(facility: str, study_uid: str, series_uid: str, object_key: str) -> str:
    """Where the thumbnail of ``object_key`` (an instance of that series) is kept."""
    digest = hashlib.sha256(object_key.encode("utf-8")).hexdigest()[:32]
    return f"derived/{facility}/{study_uid}/{series_uid}/thumbnail-{digest}.jpg"


def representative(images: Sequence[T]) -> T:
    """The image a series' thumbnail shows: the middle one, in series order."""
    return images[len(images) // 2]


def render_thumbnail(
    store: ObjectStore, object_key: str, pixel_data_offset: int, size: int
) -> bytes:
    """The JPEG thumbnail of the object's first frame, reading its header and that frame."""
    read = exact_reader(lambda offset, length: store.get_range(object_key, offset, length))
    header, layout = locate_frames(read, pixel_data_offset, size)
    image = image_attributes(header)
    stored = b"".join(read(o, n) for o, n in layout.frames[0])
    pixels = render.frame_array(image, layout, 0, stored)
    return render.render(
        image,
        pixels,
        media_type=render.JPEG,
        viewport=render.Viewport(THUMBNAIL_SIZE, THUMBNAIL_SIZE),
        quality=THUMBNAIL_QUALITY,
    )
