"""Frames out of stored instances, in their stored transfer syntax or decoded to native.

A frame request should not read a whole multi-megabyte object: `PixelLayout` records where
each frame's bytes lie in the stored object (one range for native pixel data, one range per
fragment for encapsulated data), so the object store's ``get_range`` fetches only those. The
layout is computed once per stored object (its key never changes content) and cached by the
caller.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import pack_bits, pixel_array
from pydicom.uid import UID

from noctis.dicom.errors import FrameError, StoredObjectDamaged, StoredObjectTruncated
from noctis.dicom.fragments import MAX_FRAGMENTS, Window, fragment_groups

# here for their users
__all__ = ["MAX_FRAGMENTS", "FrameError", "StoredObjectDamaged", "StoredObjectTruncated"]

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
NATIVE_SYNTAXES = frozenset(
    {
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_BIG_ENDIAN,
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    }
)
_UNDEFINED = 0xFFFFFFFF
_BINARY_VRS = frozenset({b"OB", b"OW", b"UN", b"OD", b"OF", b"OL", b"OV"})

# How one frame's bytes are laid out (Image Pixel module).
PIXEL_LAYOUT_KEYWORDS = (
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PhotometricInterpretation",
    "PlanarConfiguration",
)
# Pixel attributes needed to decode or render a frame: a small copy of these is cached
# instead of whole headers.
IMAGE_KEYWORDS = (
    "SOPClassUID",
    "Modality",
    *PIXEL_LAYOUT_KEYWORDS,
    "NumberOfFrames",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
    "PresentationLUTShape",
    "PixelPaddingValue",
    "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "SharedFunctionalGroupsSequence",
)


def image_attributes(ds: Dataset) -> Dataset:
    """A small data set with the pixel-related attributes of ``ds`` and its transfer syntax."""
    image = Dataset()
    for keyword in IMAGE_KEYWORDS:
        if keyword in ds:
            image[keyword] = ds[keyword]
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ds.file_meta.TransferSyntaxUID
    image.file_meta = meta
    return image


def number_of_frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except Exception:  # an undecodable IS value: treat as a single frame
        return 1


Ranges = tuple[tuple[int, int], ...]  # (offset, length) of each piece of one frame


@dataclass(frozen=True)
class NativeFrames(Sequence[Ranges]):
    """Where each frame of native pixel data lies, computed when asked: the frames are
    evenly spaced, so a declared count of millions costs no memory."""

    value_offset: int  # where the Pixel Data value starts in the object
    value_length: int
    frame_bits: int  # bits per frame (a multiple of 8 unless bit-packed)
    count: int
    swap: int = 0  # big endian words of this size: read whole words around each frame

    def __len__(self) -> int:
        return self.count

    @overload
    def __getitem__(self, index: int) -> Ranges: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Ranges]: ...
    def __getitem__(self, index: int | slice) -> Ranges | Sequence[Ranges]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.count))]
        if index < 0:
            index += self.count
        if not 0 <= index < self.count:
            raise IndexError(index)
        first_bit = index * self.frame_bits
        start, end = first_bit // 8, (first_bit + self.frame_bits + 7) // 8
        if self.swap:
            # Big endian words straddle frame boundaries when a frame's length is odd: read
            # whole words and trim after swapping.
            start -= start % self.swap
            end = min(self.value_length, end + (-end) % self.swap)
        return ((self.value_offset + start, end - start),)


@dataclass(frozen=True)
class PixelLayout:
    """Where the frames of one stored object are, as absolute byte ranges."""

    transfer_syntax_uid: str
    frames: Sequence[Ranges]  # per frame: (offset, length) per fragment
    packed_pixels: int = 0  # bit-packed native data: pixels per frame
    swap: int = 0  # big endian native data: the word size whose bytes must be swapped
    frame_length: int = 0  # set with swap: the frame's own length inside its whole words

    @property
    def number_of_frames(self) -> int:
        return len(self.frames)

    @property
    def encapsulated(self) -> bool:
        return self.transfer_syntax_uid not in NATIVE_SYNTAXES

    def frame_size(self, index: int) -> int:
        """Bytes of frame ``index`` (0-based) as stored."""
        return sum(length for _, length in self.frames[index])


def locate_frames(
    read: Callable[[int, int], bytes], pixel_data_offset: int, size: int
) -> tuple[Dataset, PixelLayout]:
    """The header (no pixels) and frame layout of a stored object, reading only what is needed:
    the header and the Pixel Data element header for native data, the pixel data items for
    encapsulated data. ``read(offset, length)`` reads a range of the object; ``size`` is its
    length as the index has it."""
    try:
        return _locate_frames(exact_reader(read), pixel_data_offset, size)
    except (FrameError, OSError, KeyError):
        raise  # ours, or the store's (unavailable, not found): not a malformed object
    except Exception as exc:
        raise FrameError(f"cannot locate frames: {type(exc).__name__}: {exc}") from exc


def exact_reader(read: Callable[[int, int], bytes]) -> Callable[[int, int], bytes]:
    """``read`` that raises StoredObjectTruncated when the store returns fewer bytes than
    asked: every range the read side asks for lies inside the object the index describes."""

    def exactly(offset: int, length: int) -> bytes:
        data = read(offset, length)
        if len(data) != length:
            raise StoredObjectTruncated(
                f"the stored object ends at byte {offset + len(data)}; {offset + length} expected"
            )
        return data

    return exactly


def _locate_frames(
    read: Callable[[int, int], bytes], pixel_data_offset: int, size: int
) -> tuple[Dataset, PixelLayout]:
    head = read(0, pixel_data_offset + 12)
    header = dcmread(io.BytesIO(head), stop_before_pixels=True)
    ts = str(header.file_meta.TransferSyntaxUID)
    element = head[pixel_data_offset:]
    big_endian = ts == EXPLICIT_VR_BIG_ENDIAN
    # Some files say "explicit" in their meta but encode implicitly (and vice versa): trust
    # the bytes. An explicit header has a binary VR after the tag; implicit has the length.
    explicit = element[4:6] in _BINARY_VRS
    (length,) = struct.unpack_from(">L" if big_endian else "<L", element, 8 if explicit else 4)
    value_offset = pixel_data_offset + (12 if explicit else 8)
    word_vr = element[4:6] == b"OW" or not explicit
    if "Rows" not in header or "Columns" not in header or "BitsAllocated" not in header:
        raise FrameError("the instance's pixel data has no Rows, Columns or Bits Allocated")
    if length != _UNDEFINED:
        if value_offset + length > size:
            raise StoredObjectTruncated(
                f"the Pixel Data element ends at byte {value_offset + length}, "
                f"past the stored object's {size} bytes"
            )
        swap = 0
        if big_endian:
            bits = int(header.BitsAllocated)
            swap = 2 if bits == 8 and word_vr else (bits // 8 if bits > 8 else 0)
        return header, native_layout(header, value_offset, length, swap=swap)
    # Item by item through a window: a large object's fragments are never held at once.
    window = Window(lambda o, n: read(value_offset + o, n), size - value_offset)
    expected = number_of_frames(header)
    groups = fragment_groups(header, window, size - value_offset, expected, window.read)
    return header, _encapsulated(header, groups, value_offset)


def native_layout(
    image: Dataset, value_offset: int, value_length: int, *, swap: int = 0
) -> PixelLayout:
    """Frames of native pixel data whose value starts at ``value_offset`` in the object.

    The declared Number of Frames is checked against the value's length, and nothing is
    allocated per frame: a header may claim any count."""
    ts = str(image.file_meta.TransferSyntaxUID)
    rows, columns = int(image.Rows), int(image.Columns)
    samples = int(image.get("SamplesPerPixel") or 1)
    bits = int(image.BitsAllocated)
    frames = number_of_frames(image)
    pixels = rows * columns * samples
    if bits != 1 and str(image.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
        pixels = pixels * 2 // 3  # two chroma samples shared by each pair of pixels
    frame_bits = pixels * bits if bits == 1 else pixels * bits // 8 * 8
    if frame_bits <= 0:
        raise FrameError("a frame of no bytes: Rows, Columns, Samples or Bits Allocated is 0")
    if (frames * frame_bits + 7) // 8 > value_length:
        raise FrameError("pixel data is shorter than its rows, columns and frames say")
    ranges = NativeFrames(value_offset, value_length, frame_bits, frames, swap)
    if bits == 1:
        return PixelLayout(ts, ranges, packed_pixels=pixels)
    frame_length = frame_bits // 8 if swap else 0
    return PixelLayout(ts, ranges, swap=swap, frame_length=frame_length)


def encapsulated_layout(image: Dataset, data: bytes | memoryview, data_offset: int) -> PixelLayout:
    """Frames of encapsulated pixel data; ``data`` starts at the value (the offset table item)
    and ``data_offset`` is where that is in the object."""
    view = memoryview(data)
    read = lambda o, n: view[o : o + n]  # noqa: E731
    groups = fragment_groups(image, read, len(view), number_of_frames(image))
    return _encapsulated(image, groups, data_offset)


def _encapsulated(
    image: Dataset, groups: list[list[tuple[int, int]]], data_offset: int
) -> PixelLayout:
    frames = tuple(
        tuple((data_offset + offset + 8, length) for offset, length in group) for group in groups
    )
    return PixelLayout(str(image.file_meta.TransferSyntaxUID), frames)


def native_frame(image: Dataset, layout: PixelLayout, index: int, raw: bytes) -> bytes:
    """Native (uncompressed) frame bytes in explicit VR little endian."""
    if layout.packed_pixels:
        pixels = layout.packed_pixels
        shift = index * pixels % 8
        if shift == 0 and pixels % 8 == 0:
            return raw
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
        return pack_bits(bits[shift : shift + pixels], pad=False)
    if layout.swap:
        dtype = np.dtype(f">u{layout.swap}")
        usable = len(raw) - len(raw) % layout.swap
        swapped = np.frombuffer(raw[:usable], dtype=dtype).astype(dtype.newbyteorder("<"))
        lead = (index * layout.frame_length) % layout.swap
        return (swapped.tobytes() + raw[usable:])[lead : lead + layout.frame_length]
    return raw


def decode_frame(image: Dataset, encoded: bytes) -> np.ndarray:
    """Decode one frame in the image's (compressed) transfer syntax into an array.

    Color frames come back as RGB (pydicom converts YBR), as a viewer expects.
    """
    ds = single_frame_dataset(image, encoded)
    try:
        return pixel_array(ds)
    except Exception as exc:
        raise FrameError(f"cannot decode frame: {type(exc).__name__}: {exc}") from exc


def native_array(image: Dataset, native: bytes, *, raw: bool = False) -> np.ndarray:
    """An array from native little endian frame bytes (one frame); YBR becomes RGB unless
    ``raw``."""
    ds = single_frame_dataset(image)
    ds.file_meta.TransferSyntaxUID = UID(EXPLICIT_VR_LITTLE_ENDIAN)
    ds.PixelData = native
    ds["PixelData"].VR = "OW" if int(image.BitsAllocated) > 8 else "OB"
    try:
        return pixel_array(ds, raw=raw)
    except Exception as exc:
        raise FrameError(f"cannot read frame: {type(exc).__name__}: {exc}") from exc


def array_to_native(image: Dataset, array: np.ndarray) -> bytes:
    """Decoded pixels as native little endian frame bytes."""
    if int(image.BitsAllocated) == 1:
        return pack_bits(array, pad=False)
    bits = int(image.BitsAllocated)
    if array.dtype.itemsize * 8 != bits and bits in (8, 16, 32):
        kind = "i" if int(image.get("PixelRepresentation") or 0) else "u"
        array = array.astype(f"<{kind}{bits // 8}")
    return array.astype(array.dtype.newbyteorder("<")).tobytes()


def single_frame_dataset(image: Dataset, encoded: bytes | None = None) -> Dataset:
    """A data set of one frame with ``image``'s pixel attributes: ``encoded`` (one frame as
    stored, encapsulated) as its Pixel Data when given."""
    ds = Dataset()
    for keyword in PIXEL_LAYOUT_KEYWORDS:
        if keyword in image:
            ds[keyword] = image[keyword]
    ds.NumberOfFrames = 1
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = image.file_meta.TransferSyntaxUID
    ds.file_meta = meta
    if encoded is not None:
        ds.PixelData = encapsulate([encoded])
        ds["PixelData"].VR = "OB"
    return ds


def value_layout(image: Dataset, value: bytes, vr: str) -> PixelLayout:
    """The layout of a Pixel Data value held in memory (an object read whole, as deflated ones
    are): ranges into ``value``, bounded like a stored object's."""
    ts = str(image.file_meta.TransferSyntaxUID)
    if ts not in NATIVE_SYNTAXES:
        return encapsulated_layout(image, value, 0)
    swap = 0
    if ts == EXPLICIT_VR_BIG_ENDIAN:
        bits = int(image.BitsAllocated)
        swap = 2 if bits == 8 and vr == "OW" else (bits // 8 if bits > 8 else 0)
    return native_layout(image, 0, len(value), swap=swap)
