"""Reading stored objects for WADO-RS: headers, metadata JSON, frame layouts and frames.

Headers are read with one ranged read up to the Pixel Data element (the index stores its
offset), frames with one ranged read per fragment; only deflated objects, whose pixel data
offset means nothing in the stored bytes, are read whole.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

from pydicom import dcmread
from pydicom.dataset import Dataset

from noctis.api.dicomweb.cache import LRU, DicomWebCache
from noctis.api.dicomweb.failures import FrameNotFound
from noctis.api.dicomweb.lookup import StoredInstance
from noctis.dicom import metadata as dicom_metadata
from noctis.dicom.deflated import open_deflated_pixels
from noctis.dicom.metadata import BASE_MARKER, BUNDLE_MINIMUM
from noctis.dicom.transcode import (
    FrameError,
    PixelLayout,
    StoredObjectTruncated,
    array_to_native,
    decode_frame,
    exact_reader,
    image_attributes,
    locate_frames,
    native_frame,
    native_layout,
    value_layout,
)
from noctis.storage import ObjectNotFound, ObjectStore, StorageUnavailable

log = logging.getLogger(__name__)

_BASE_MARKER_BYTES = BASE_MARKER.encode("ascii")
# A series with fewer uncached instances is read header by header: a bundle holds the whole
# series, which is more to read than a few headers.


def read_header(store: ObjectStore, instance: StoredInstance) -> Dataset:
    """The instance's data set without pixel data (whole, pixels included, when the index
    has no pixel data offset: deflated or pixel-less objects)."""
    return dicom_metadata.read_header(store, instance.object_key, instance.pixel_data_offset)


def build_fragment(store: ObjectStore, cache: DicomWebCache, instance: StoredInstance) -> bytes:
    """One instance's DICOM JSON from its stored header, put in the cache."""
    fragment = dicom_metadata.instance_fragment(
        store,
        instance.object_key,
        instance.pixel_data_offset,
        instance.transfer_syntax_uid,
        instance.path,
    )
    cache.metadata.put(instance.object_key, fragment)
    return fragment


def bundled_fragments(
    store: ObjectStore, cache: DicomWebCache, instances: list[StoredInstance]
) -> dict[str, bytes]:
    """Fragments of uncached ``instances`` from their series' bundles (one read per series
    with at least BUNDLE_MINIMUM of them), put in the cache; object key -> fragment.

    Only the keys asked for are taken, so a bundle older than the series, or holding an
    instance since replaced, only leaves some instances to be read from their headers.
    """
    by_series: dict[str, list[StoredInstance]] = {}
    for instance in instances:
        key = dicom_metadata.bundle_key(instance.facility, instance.study_uid, instance.series_uid)
        by_series.setdefault(key, []).append(instance)
    found: dict[str, bytes] = {}
    for key, members in by_series.items():
        if len(members) < BUNDLE_MINIMUM:
            continue
        bundle = _read_bundle(store, key)
        for instance in members:
            fragment = bundle.get(instance.object_key)
            if fragment is not None:
                cache.metadata.put(instance.object_key, fragment)
                found[instance.object_key] = fragment
    return found


def metadata_document(fragments: list[bytes], base_url: str) -> bytes:
    """A JSON array of instance fragments with the base URL filled in."""
    body = b"[" + b",".join(fragments) + b"]"
    escaped = json.dumps(base_url)[1:-1].encode("utf-8")
    return body.replace(_BASE_MARKER_BYTES, escaped)


def _read_bundle(store: ObjectStore, key: str) -> dict[str, bytes]:
    try:
        return dicom_metadata.decode_bundle(store.get(key))
    except ObjectNotFound:
        return {}  # not built yet (or the series is still arriving)
    except StorageUnavailable:
        raise  # the headers are in the same store: 503, not a slow request that fails anyway
    except Exception:
        log.warning("ignoring the unreadable series metadata bundle %s", key, exc_info=True)
        return {}


def frame_layout(
    store: ObjectStore, cache: DicomWebCache, instance: StoredInstance
) -> tuple[Dataset, PixelLayout] | None:
    """(image attributes, layout) of an instance, or None when its frames can only be read
    from the whole object (see ``whole_object_source``)."""
    if instance.pixel_data_offset is None:
        return None
    cached = cache.layouts.get(instance.object_key)
    if cached is not None:
        return cached
    key = instance.object_key
    header, layout = locate_frames(
        lambda offset, length: store.get_range(key, offset, length),
        instance.pixel_data_offset,
        instance.size,
    )
    entry = (image_attributes(header), layout)
    cache.layouts.put(key, entry)
    return entry


def check_frames(count: int, numbers: list[int]) -> None:
    wrong = [n for n in numbers if n > count]
    if wrong:
        raise FrameNotFound(f"frame {wrong[0]} does not exist; the instance has {count}")


def stored_frames(
    store: ObjectStore,
    instance: StoredInstance,
    layout: PixelLayout,
    numbers: list[int],
    cache: LRU[bytes] | None = None,
) -> Iterator[bytes]:
    """The frames (1-based numbers) as stored: fragments joined, native bytes untouched;
    from ``cache`` when it holds them, into it when it does not."""
    for number in numbers:
        key = f"{instance.object_key}#{number}"
        cached = cache.get(key) if cache is not None else None
        if cached is not None:
            yield cached
            continue
        read = exact_reader(lambda o, n: store.get_range(instance.object_key, o, n))
        data = b"".join(read(o, n) for o, n in layout.frames[number - 1])
        if cache is not None:
            cache.put(key, data)
        yield data


def native_frames(
    store: ObjectStore,
    instance: StoredInstance,
    image: Dataset,
    layout: PixelLayout,
    numbers: list[int],
    cache: LRU[bytes] | None = None,
) -> Iterator[bytes]:
    """The frames as explicit VR little endian native bytes (decoded if compressed)."""
    for number, stored in zip(
        numbers, stored_frames(store, instance, layout, numbers, cache), strict=True
    ):
        if layout.encapsulated:
            yield array_to_native(image, decode_frame(image, stored))
        else:
            yield native_frame(image, layout, number - 1, stored)


def whole_object_frame_list(
    image: Dataset, layout: PixelLayout, read: Callable[[int, int], bytes], numbers: list[int]
) -> Iterator[bytes]:
    """The frames (native ones as explicit VR little endian), read front to back whatever
    order they are asked in, and given in that order."""
    found: dict[int, bytes] = {}
    for number in sorted(set(numbers)):
        stored = b"".join(read(o, n) for o, n in layout.frames[number - 1])
        if not layout.encapsulated:
            stored = native_frame(image, layout, number - 1, stored)
        found[number] = stored
    for number in numbers:
        yield found[number]


def whole_object_pixels(
    store: ObjectStore, instance: StoredInstance, number: int, *, max_inflated: int
) -> tuple[Dataset, PixelLayout, bytes]:
    """(image attributes, layout, frame as stored) of an object without a pixel data
    offset, for rendering."""
    image, layout, read = whole_object_source(store, instance, max_inflated=max_inflated)
    check_frames(layout.number_of_frames, [number])
    return image, layout, b"".join(read(o, n) for o, n in layout.frames[number - 1])


def whole_object_source(
    store: ObjectStore, instance: StoredInstance, *, max_inflated: int
) -> tuple[Dataset, PixelLayout, Callable[[int, int], bytes]]:
    """(image attributes, layout, read(offset, length) within the Pixel Data value) of an
    object without a pixel data offset.

    A deflated object is inflated as the reads go, front to back, keeping nothing between
    the ranges read: a frame deep in 300 MB of inflated pixels costs its own size, and
    nothing past ``max_inflated`` bytes is inflated (StoredObjectDamaged). The layout is the
    same bounded one as a stored object's, so a header's Number of Frames is checked against
    the value's length, never trusted."""
    chunks = store.iter_chunks(instance.object_key, 1 << 16)
    opened = open_deflated_pixels(chunks, max_inflated=max_inflated)
    if opened is not None:
        header, length, reader = opened
        _check_image(header)
        if length == 0xFFFFFFFF:
            raise FrameError("deflated pixel data of undefined length")
        image = image_attributes(header)
        return image, native_layout(image, 0, length), reader.read
    data = store.get(instance.object_key)  # not deflated: a file the header scan missed
    if len(data) != instance.size:
        raise StoredObjectTruncated(
            f"the stored object has {len(data)} bytes; the index says {instance.size}"
        )
    ds = dcmread(io.BytesIO(data))
    del data
    if "PixelData" not in ds or not isinstance(ds.PixelData, bytes):
        raise FrameNotFound("the instance has no pixel data")
    _check_image(ds)
    image = image_attributes(ds)
    value = ds.PixelData
    layout = value_layout(image, value, ds["PixelData"].VR)
    return image, layout, lambda o, n: value[o : o + n]


def _check_image(ds: Dataset) -> None:
    if "Rows" not in ds or "Columns" not in ds or "BitsAllocated" not in ds:
        raise FrameError("the instance's pixel data has no Rows, Columns or Bits Allocated")
