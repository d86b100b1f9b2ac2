"""Whole instances re-encoded as explicit VR little endian, for WADO-RS clients that ask
for it: deflated ones by inflating as they are sent, compressed ones by decoding frame by
frame as they are sent, others (small, or odd) decoded whole."""

from __future__ import annotations

import copy
import io
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.pixels import get_decoder, pixel_array
from pydicom.uid import UID

from noctis.dicom.deflated import LazyStream, inflate
from noctis.dicom.inflate import DEFAULT_MAX_INFLATED
from noctis.dicom.transcode import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    NATIVE_SYNTAXES,
    FrameError,
    PixelLayout,
    array_to_native,
    single_frame_dataset,
)

_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\0\0\0\0"
# Elements after Pixel Data are read whole; more than this of them is decoded the old way.
_TRAILER_LIMIT = 1 << 20
_CHUNK = 1 << 20


def inflated_as_explicit(
    chunks: Iterable[bytes], max_inflated: int = DEFAULT_MAX_INFLATED
) -> Iterator[bytes]:
    """A deflated Part 10 object as explicit VR little endian, chunk by chunk: the same data
    set inflated (PS3.5 A.5: deflate wraps an explicit little endian encoding), behind its
    file meta with the transfer syntax changed. Nothing is decoded or held whole; a stream
    that is corrupt, cut short or inflates past ``max_inflated`` raises StoredObjectDamaged
    (the answer has started: it ends short)."""
    raw = LazyStream(chunks)
    preamble = read_preamble(raw, False) or b"\0" * 128
    meta = _read_file_meta_info(raw)
    meta.TransferSyntaxUID = UID(EXPLICIT_VR_LITTLE_ENDIAN)
    head = DicomBytesIO()
    head.write(preamble + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    yield head.getvalue()
    yield from inflate(raw.remainder(), max_inflated)


@dataclass
class DecodedInstance:
    """A compressed instance as explicit VR little endian, decoded as it is sent: ``head``
    (file meta, header, Pixel Data element header) then ``frames``, ``length`` bytes in all.
    The same bytes as ``to_explicit_little_endian`` gives, with about one frame in memory."""

    head: bytes
    frames: Iterator[bytes]
    length: int


def decoded_as_explicit(
    read: Callable[[int, int], bytes], pixel_data_offset: int, size: int, layout: PixelLayout
) -> DecodedInstance | None:
    """``read(offset, length)`` (exact) of a stored compressed object, decoded frame by frame;
    None when it is left to be decoded whole, as before (over 1 MB of elements after Pixel
    Data, an unusual end of the pixel data, or bit-packed pixels).

    The first frame is decoded before anything is sent: the decoder says what the header
    becomes (Photometric Interpretation, Planar Configuration), as ``decompress`` sets it."""
    if not layout.encapsulated:
        return None
    end = max((o + n for frame in layout.frames for o, n in frame), default=0)
    if not 0 <= size - end - 8 <= _TRAILER_LIMIT:
        return None
    after = read(end, size - end)  # also checks the object reaches its end before we start
    if after[:8] != _SEQUENCE_DELIMITER:
        return None
    ds = dcmread(io.BytesIO(read(0, pixel_data_offset)), stop_before_pixels=True)
    bits = int(ds.BitsAllocated)
    if bits % 8:
        return None
    count = layout.number_of_frames
    frame_length = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1)
    frame_length *= bits // 8
    length = frame_length * count
    if length + length % 2 >= 0xFFFFFFFF:
        raise FrameError("the decoded pixel data would be longer than a DICOM value can be")
    decode = _frame_decoder(ds, frame_length)
    first, image_pixel = decode(b"".join(read(o, n) for o, n in layout.frames[0]))
    ds.file_meta.TransferSyntaxUID = UID(EXPLICIT_VR_LITTLE_ENDIAN)
    ds.PhotometricInterpretation = image_pixel["photometric_interpretation"]
    if int(image_pixel["samples_per_pixel"]) > 1:
        ds.PlanarConfiguration = int(image_pixel["planar_configuration"])
    if "NumberOfFrames" in ds or count > 1:
        ds.NumberOfFrames = count
    head = _explicit_bytes(ds)
    padded = length + length % 2
    vr = b"OB" if bits <= 8 else b"OW"
    head += struct.pack("<HH2s2xL", 0x7FE0, 0x0010, vr, padded)

    trailer = _trailing_elements(after[8:])

    def frames() -> Iterator[bytes]:
        yield first
        for index in range(1, count):
            yield decode(b"".join(read(o, n) for o, n in layout.frames[index]))[0]
        yield b"\0" * (length % 2) + trailer

    return DecodedInstance(head, frames(), len(head) + padded + len(trailer))


def implicit_as_explicit(
    read: Callable[[int, int], bytes], pixel_data_offset: int, size: int
) -> DecodedInstance | None:
    """``read(offset, length)`` (exact) of a stored implicit VR little endian object as
    explicit VR little endian: its header re-encoded, its Pixel Data value (the same bytes)
    copied range by range. None when it is left to be re-encoded whole, as before."""
    element = read(pixel_data_offset, 8)
    (length,) = struct.unpack_from("<L", element, 4)
    value_offset = pixel_data_offset + 8
    if length == 0xFFFFFFFF or element[4:6].isalpha():  # encapsulated, or explicit after all
        return None
    end = value_offset + length
    if not 0 <= size - end <= _TRAILER_LIMIT:
        return None  # the value runs past the object, or much follows it
    after = read(end, size - end)  # also checks the object reaches its end before we start
    # The header with an empty Pixel Data value: pydicom writes the element as it would with
    # the value (OB or OW, its choice), and the real length goes in its place.
    head = io.BytesIO(read(0, value_offset)[:-4] + b"\0\0\0\0")
    ds = dcmread(head)
    ds.file_meta.TransferSyntaxUID = UID(EXPLICIT_VR_LITTLE_ENDIAN)
    written = _explicit_bytes(ds)
    if written[-12:-8] != b"\xe0\x7f\x10\x00" or written[-4:] != b"\0\0\0\0":
        return None
    written = written[:-4] + struct.pack("<L", length)
    trailer = _trailing_elements(after, implicit=True)

    def value() -> Iterator[bytes]:
        for offset in range(value_offset, end, _CHUNK):
            yield read(offset, min(_CHUNK, end - offset))
        yield trailer

    return DecodedInstance(written, value(), len(written) + length + len(trailer))


def _trailing_elements(data: bytes, implicit: bool = False) -> bytes:
    """Elements after Pixel Data (Data Set Trailing Padding, in pydicom's test files) as
    explicit VR little endian, written as pydicom writes them in a whole data set."""
    if not data:
        return b""
    trailer = read_dataset(DicomBytesIO(data), implicit, True)
    _convert_all(trailer)
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, trailer)
    return out.getvalue()


def _frame_decoder(
    header: Dataset, frame_length: int
) -> Callable[[bytes], tuple[bytes, dict[str, Any]]]:
    """decode(one frame as stored) -> (its native bytes, what the decoder says of them), as
    pydicom's ``decompress`` decodes each frame (YBR as RGB)."""
    decoder = get_decoder(header.file_meta.TransferSyntaxUID)
    # A copy: the header is changed to what it becomes (RGB, explicit VR little endian)
    # while the frames still need decoding as they were stored.
    image = copy.deepcopy(single_frame_dataset(header))

    def decode(encoded: bytes) -> tuple[bytes, dict[str, Any]]:
        ds = single_frame_dataset(image, encoded)
        try:
            array, image_pixel = next(decoder.iter_array(ds, as_rgb=True))
        except Exception as exc:
            raise FrameError(f"cannot decode frame: {type(exc).__name__}: {exc}") from exc
        data = array.tobytes()
        if len(data) != frame_length:
            raise FrameError(f"a frame decoded to {len(data)} bytes; {frame_length} expected")
        return data, image_pixel

    return decode


def _explicit_bytes(ds: Dataset) -> bytes:
    """``ds`` (with file meta) written as explicit VR little endian, as
    ``to_explicit_little_endian`` writes it."""
    _convert_all(ds)
    if not getattr(ds, "preamble", None):
        ds.preamble = b"\x00" * 128
    out = io.BytesIO()
    # force_encoding: pydicom otherwise refuses to turn big endian into little endian. Every
    # element was converted above, so no raw bytes of the old encoding are copied.
    dcmwrite(out, ds, implicit_vr=False, little_endian=True, force_encoding=True)
    return out.getvalue()


def to_explicit_little_endian(data: bytes) -> bytes:
    """A whole Part 10 instance re-encoded as explicit VR little endian, pixels decoded."""
    ds = dcmread(io.BytesIO(data))
    ts = str(ds.file_meta.TransferSyntaxUID)
    if ts == EXPLICIT_VR_LITTLE_ENDIAN:
        return data
    if "PixelData" in ds and ts not in NATIVE_SYNTAXES:
        # The instance keeps its SOP Instance UID: the client asked for this instance.
        ds.decompress(generate_instance_uid=False)
    elif "PixelData" in ds and ts == EXPLICIT_VR_BIG_ENDIAN:
        array = pixel_array(ds, raw=True)
        ds.PixelData = array_to_native(ds, array)
    ds.file_meta.TransferSyntaxUID = UID(EXPLICIT_VR_LITTLE_ENDIAN)
    return _explicit_bytes(ds)


def _convert_all(ds: Dataset) -> Any:
    # Touch every element so none is written back as raw bytes of the old encoding.
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                _convert_all(item)
