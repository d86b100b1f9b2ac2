"""Whole instances re-encoded as explicit VR little endian, for WADO-RS clients that ask
for it: deflated ones by inflating as they are sent, others by decoding."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any

from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.filewriter import write_file_meta_info
from pydicom.pixels import pixel_array
from pydicom.uid import UID

from noctis.dicom.deflated import LazyStream, inflate
from noctis.dicom.transcode import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    NATIVE_SYNTAXES,
    array_to_native,
)


def inflated_as_explicit(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """A deflated Part 10 object as explicit VR little endian, chunk by chunk: the same data
    set inflated (PS3.5 A.5: deflate wraps an explicit little endian encoding), behind its
    file meta with the transfer syntax changed. Nothing is decoded or held whole."""
    raw = LazyStream(chunks)
    preamble = read_preamble(raw, False) or b"\0" * 128
    meta = _read_file_meta_info(raw)
    meta.TransferSyntaxUID = UID(EXPLICIT_VR_LITTLE_ENDIAN)
    head = DicomBytesIO()
    head.write(preamble + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    yield head.getvalue()
    yield from inflate(raw.remainder())


def to_explicit_little_endian(data: bytes) -> bytes:
    """A whole Part 10 instance re-encoded as explicit VR little endian, pixels decoded."""
    ds = dcmread(io.BytesIO(data))
    ts = str(ds.file_meta.TransferSyntaxUID)
    if ts == EXPLICIT_VR_LITTLE_ENDIAN:
        return data
    if "PixelData" in ds and ts not in NATIVE_SYNTAXES:
        ds.decompress()
    elif "PixelData" in ds and ts == EXPLICIT_VR_BIG_ENDIAN:
        array = pixel_array(ds, raw=True)
        ds.PixelData = array_to_native(ds, array)
    _convert_all(ds)
    ds.file_meta.TransferSyntaxUID = UID(EXPLICIT_VR_LITTLE_ENDIAN)
    if not getattr(ds, "preamble", None):
        ds.preamble = b"\x00" * 128
    out = io.BytesIO()
    # force_encoding: pydicom otherwise refuses to turn big endian into little endian. Every
    # element was converted above, so no raw bytes of the old encoding are copied.
    dcmwrite(out, ds, implicit_vr=False, little_endian=True, force_encoding=True)
    return out.getvalue()


def _convert_all(ds: Dataset) -> Any:
    # Touch every element so none is written back as raw bytes of the old encoding.
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                _convert_all(item)
