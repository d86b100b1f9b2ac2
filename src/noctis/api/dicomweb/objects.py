"""Reading stored objects for WADO-RS: headers, metadata JSON, frame layouts and frames.

Headers are read with one ranged read up to the Pixel Data element (the index stores its
offset), frames with one ranged read per fragment; only deflated objects, whose pixel data
offset means nothing in the stored bytes, are read whole.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array

from noctis.api.dicomweb.cache import DicomWebCache
from noctis.api.dicomweb.lookup import StoredInstance
from noctis.dicom.json import dataset_to_json, tag_key
from noctis.dicom.transcode import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    NATIVE_SYNTAXES,
    FrameError,
    PixelLayout,
    array_to_native,
    decode_frame,
    frames_from_dataset,
    image_attributes,
    locate_frames,
    native_frame,
    number_of_frames,
)
from noctis.storage import ObjectStore

# Stands for the DICOMweb base URL in cached metadata; replaced per response, so one cache
# entry serves every host name the API is reached by.
BASE_MARKER = "@@noctis-dicomweb-base@@"
_BASE_MARKER_BYTES = BASE_MARKER.encode("ascii")


def read_header(store: ObjectStore, instance: StoredInstance) -> Dataset:
    """The instance's data set without pixel data (whole, pixels included, when the index
    has no pixel data offset: deflated or pixel-less objects)."""
    if instance.pixel_data_offset is not None:
        data = store.get_range(instance.object_key, 0, instance.pixel_data_offset)
        return dcmread(io.BytesIO(data), stop_before_pixels=True)
    return dcmread(io.BytesIO(store.get(instance.object_key)))


def metadata_fragment(store: ObjectStore, cache: DicomWebCache, instance: StoredInstance) -> bytes:
    """One instance's DICOM JSON (bytes, base URL as BASE_MARKER), cached by object key."""
    cached = cache.metadata.get(instance.object_key)
    if cached is not None:
        return cached
    header = read_header(store, instance)
    prefix = f"{BASE_MARKER}{instance.path}/bulkdata/"
    document = dataset_to_json(header, bulk_prefix=prefix)
    pixel_key = tag_key(0x7FE00010)
    if instance.pixel_data_offset is not None and pixel_key not in document:
        native = instance.transfer_syntax_uid in NATIVE_SYNTAXES
        wide = int(header.get("BitsAllocated") or 8) > 8
        vr = "OW" if native and wide else "OB"
        document[pixel_key] = {"vr": vr, "BulkDataURI": prefix + pixel_key}
    document[tag_key(0x00083002)] = {"vr": "UI", "Value": [instance.transfer_syntax_uid]}
    ordered = dict(sorted(document.items()))
    fragment = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    cache.metadata.put(instance.object_key, fragment)
    return fragment


def metadata_document(fragments: list[bytes], base_url: str) -> bytes:
    """A JSON array of instance fragments with the base URL filled in."""
    body = b"[" + b",".join(fragments) + b"]"
    escaped = json.dumps(base_url)[1:-1].encode("utf-8")
    return body.replace(_BASE_MARKER_BYTES, escaped)


def frame_layout(
    store: ObjectStore, cache: DicomWebCache, instance: StoredInstance
) -> tuple[Dataset, PixelLayout] | None:
    """(image attributes, layout) of an instance, or None when its frames can only be read
    from the whole object (see ``whole_object_frames``)."""
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


class FrameNotFound(FrameError):
    """A requested frame number is beyond the instance's frames."""


def stored_frames(
    store: ObjectStore, instance: StoredInstance, layout: PixelLayout, numbers: list[int]
) -> Iterator[bytes]:
    """The frames (1-based numbers) as stored: fragments joined, native bytes untouched."""
    for number in numbers:
        ranges = layout.frames[number - 1]
        yield b"".join(store.get_range(instance.object_key, o, n) for o, n in ranges)


def native_frames(
    store: ObjectStore,
    instance: StoredInstance,
    image: Dataset,
    layout: PixelLayout,
    numbers: list[int],
) -> Iterator[bytes]:
    """The frames as explicit VR little endian native bytes (decoded if compressed)."""
    for number, stored in zip(
        numbers, stored_frames(store, instance, layout, numbers), strict=True
    ):
        if layout.encapsulated:
            yield array_to_native(image, decode_frame(image, stored))
        else:
            yield native_frame(image, layout, number - 1, stored)


def whole_object_frames(
    store: ObjectStore, instance: StoredInstance, numbers: list[int]
) -> tuple[Dataset, list[bytes], str]:
    """Frames of an object read whole (deflated): (image attributes, frames, syntax)."""
    ds = dcmread(io.BytesIO(store.get(instance.object_key)))
    if "PixelData" not in ds:
        raise FrameError("the instance has no pixel data")
    check_frames(number_of_frames(ds), numbers)
    frames = frames_from_dataset(ds)
    ts = str(ds.file_meta.TransferSyntaxUID)
    syntax = ts if ts not in NATIVE_SYNTAXES else EXPLICIT_VR_LITTLE_ENDIAN
    return image_attributes(ds), [frames[n - 1] for n in numbers], syntax


def whole_object_pixels(
    store: ObjectStore, instance: StoredInstance, number: int
) -> tuple[Dataset, np.ndarray]:
    """(image attributes, decoded frame) of an object read whole, for rendering."""
    ds = dcmread(io.BytesIO(store.get(instance.object_key)))
    if "PixelData" not in ds:
        raise FrameError("the instance has no pixel data")
    check_frames(number_of_frames(ds), [number])
    try:
        return image_attributes(ds), pixel_array(ds, index=number - 1)
    except Exception as exc:
        raise FrameError(f"cannot decode frame: {type(exc).__name__}: {exc}") from exc
