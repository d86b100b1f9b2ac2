"""WADO-RS metadata fragments: one instance's DICOM JSON, and series bundles of them.

A fragment is an instance's header as DICOM JSON bytes (compact, tags sorted), built from one
ranged read up to the Pixel Data element (the index stores its offset). Bulk data URIs start
with ``BASE_MARKER``, which the API replaces with the DICOMweb base URL of each response, so
one fragment serves every host name the API is reached by.

An object key names one immutable content, so a fragment derived from it never goes stale.
The worker writes a series bundle -- {object key: fragment} for the instances of a series at
that moment -- as a derivative object; the API reads it once instead of one header per
instance. A bundle may be incomplete (instances stored after it), never wrong: readers use it
only for the keys the index lists.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping

from pydicom import dcmread
from pydicom.dataset import Dataset

from noctis.dicom.deflated import read_header_stream
from noctis.dicom.json import PIXEL_DATA, dataset_to_json, tag_key
from noctis.dicom.transcode import NATIVE_SYNTAXES, exact_reader
from noctis.storage import ObjectStore

# Stands for the DICOMweb base URL in fragments; replaced per response.
BASE_MARKER = "@@noctis-dicomweb-base@@"
# Names how fragments are encoded: bump it when ``instance_fragment``'s output changes, so
# bundles written by older code are ignored (and rebuilt) instead of served.
FRAGMENT_FORMAT = "noctis.instance-metadata/1"
AVAILABLE_TRANSFER_SYNTAX_UID = 0x00083002


def instance_path(study_uid: str, series_uid: str, sop_uid: str) -> str:
    """The instance's path under the DICOMweb root."""
    return f"/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"


def read_header(store: ObjectStore, object_key: str, pixel_data_offset: int | None) -> Dataset:
    """The stored data set without pixel data (see ``read_header_and_pixels``)."""
    return read_header_and_pixels(store, object_key, pixel_data_offset)[0]


def read_header_and_pixels(
    store: ObjectStore, object_key: str, pixel_data_offset: int | None
) -> tuple[Dataset, bool]:
    """(the stored data set without pixel data, whether the object has pixel data): one
    ranged read up to the pixel data offset, or, without one (deflated or pixel-less
    objects), the object read in chunks up to Pixel Data, deflated ones inflated only that
    far: pixel data is never inflated to answer metadata."""
    if pixel_data_offset is not None:
        data = exact_reader(lambda o, n: store.get_range(object_key, o, n))(0, pixel_data_offset)
        return dcmread(io.BytesIO(data), stop_before_pixels=True), True
    return read_header_stream(store.iter_chunks(object_key, 1 << 16))


def instance_fragment(
    store: ObjectStore,
    object_key: str,
    pixel_data_offset: int | None,
    transfer_syntax_uid: str,
    instance_path: str,
) -> bytes:
    """One instance's DICOM JSON (UTF-8 bytes, base URL as BASE_MARKER)."""
    header, has_pixels = read_header_and_pixels(store, object_key, pixel_data_offset)
    prefix = f"{BASE_MARKER}{instance_path}/bulkdata/"
    document = dataset_to_json(header, bulk_prefix=prefix)
    pixel_key = tag_key(PIXEL_DATA)
    if has_pixels and pixel_key not in document:
        native = transfer_syntax_uid in NATIVE_SYNTAXES
        wide = int(header.get("BitsAllocated") or 8) > 8
        vr = "OW" if native and wide else "OB"
        document[pixel_key] = {"vr": vr, "BulkDataURI": prefix + pixel_key}
    document[tag_key(AVAILABLE_TRANSFER_SYNTAX_UID)] = {"vr": "UI", "Value": [transfer_syntax_uid]}
    ordered = dict(sorted(document.items()))
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def bundle_key(facility: str, study_uid: str, series_uid: str) -> str:
    """Where the series metadata bundle of a series lives in the object store."""
    return f"derived/{facility}/{study_uid}/{series_uid}/metadata.json"


def encode_bundle(fragments: Mapping[str, bytes]) -> bytes:
    """A bundle: {"format": ..., "fragments": {object key: fragment as a JSON string}}.

    Fragments are kept as strings, not parsed objects, so a reader gets the very bytes the
    header path builds without re-serializing them.
    """
    document = {
        "format": FRAGMENT_FORMAT,
        "fragments": {key: fragment.decode("utf-8") for key, fragment in fragments.items()},
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class InvalidBundle(ValueError):
    """Not a bundle this code can read (corrupt, or written for another fragment format)."""


def decode_bundle(data: bytes) -> dict[str, bytes]:
    """object key -> fragment; raises InvalidBundle."""
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise InvalidBundle(f"not JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != FRAGMENT_FORMAT:
        raise InvalidBundle("not a bundle of the current fragment format")
    fragments = document.get("fragments")
    if not isinstance(fragments, dict):
        raise InvalidBundle("a bundle without fragments")
    return {
        str(key): value.encode("utf-8")
        for key, value in fragments.items()
        if isinstance(value, str)
    }


# Series with fewer instances are answered from their headers: a bundle would not save a read.
BUNDLE_MINIMUM = 4
