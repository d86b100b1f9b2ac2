"""Pixel data against what the header declares, from the structural walk's findings.

Native pixel data (PS3.5 8.1.1) must hold exactly Rows x Columns x SamplesPerPixel x
BitsAllocated x NumberOfFrames bits, rounded up to bytes, plus padding: the standard's one
byte to an even length, or less than a frame more (some writers pad further, and every declared
frame is still whole). Encapsulated pixel data (A.4) must hold at least one fragment per frame
(except video, whose frames share fragments) and a Basic Offset Table that is empty or has one
entry per frame, the first 0. A frame of zero bytes is refused whatever the frame count, so no
declared count can make a later reader build per-frame structures the data does not back;
NumberOfFrames is an IS, at most 2^31 - 1.
"""

from __future__ import annotations

from pydicom.uid import UID, MPEGTransferSyntaxes

from noctis.dicom.errors import MalformedDicom
from noctis.dicom.fragments import MAX_FRAGMENTS
from noctis.dicom.structure import PIXEL_ATTRIBUTES, UNDEFINED, PixelElement, Walked

MAX_FRAMES = 2**31 - 1
_BITS_FOR_TAG = {0x7FE00008: 32, 0x7FE00009: 64}  # Float / Double Float Pixel Data
_VIDEO = frozenset(MPEGTransferSyntaxes)
_TAG_FOR = {keyword: tag for tag, keyword in PIXEL_ATTRIBUTES.items()}


def check_pixels(walked: Walked) -> None:
    """MalformedDicom unless every top-level pixel data element adds up."""
    if not walked.pixels:
        return
    frames = _number_of_frames(walked)
    rows, columns = _us(walked, "Rows"), _us(walked, "Columns")
    if not rows or not columns:
        raise MalformedDicom(f"Pixel Data with Rows {rows} and Columns {columns}")
    encapsulated = _encapsulated(walked.transfer_syntax)
    for pixels in walked.pixels:
        if pixels.length == UNDEFINED:
            if encapsulated is False:
                raise MalformedDicom("encapsulated Pixel Data in a native transfer syntax")
            _check_encapsulated(pixels, frames, walked.transfer_syntax in _VIDEO)
        else:
            if encapsulated and pixels.tag == 0x7FE00010:
                raise MalformedDicom("native Pixel Data in an encapsulated transfer syntax")
            _check_native(walked, pixels, frames, rows, columns)


def _check_native(
    walked: Walked, pixels: PixelElement, frames: int, rows: int, columns: int
) -> None:
    samples = _us(walked, "SamplesPerPixel")
    samples = 1 if samples is None else samples
    bits = _BITS_FOR_TAG.get(pixels.tag) or _us(walked, "BitsAllocated")
    if not samples or not bits:
        raise MalformedDicom(f"Pixel Data with SamplesPerPixel {samples}, BitsAllocated {bits}")
    if samples == 3 and _text(walked, "PhotometricInterpretation") == "YBR_FULL_422":
        samples = 2  # two chroma samples shared by each pair of pixels (PS3.3 C.7.6.3.1.2)
    frame_bits = rows * columns * samples * bits
    expected = (frame_bits * frames + 7) // 8
    # Shorter is truncated. Longer by less than a frame is padding some writers add (pydicom's
    # MR_small_padded.dcm): every declared frame is whole. A whole frame more means the
    # declared NumberOfFrames is wrong.
    if not expected <= pixels.length < expected + max(2, (frame_bits + 7) // 8):
        raise MalformedDicom(f"Pixel Data holds {pixels.length} bytes, the header needs {expected}")


def _check_encapsulated(pixels: PixelElement, frames: int, video: bool) -> None:
    table = pixels.offset_table_length
    if not pixels.fragments:
        raise MalformedDicom("encapsulated Pixel Data without a fragment")
    if pixels.fragments > MAX_FRAGMENTS:  # the read side could never serve its frames
        raise MalformedDicom(f"encapsulated Pixel Data of more than {MAX_FRAGMENTS} fragments")
    if table % 4:
        raise MalformedDicom(f"Basic Offset Table of {table} bytes, not whole entries")
    if table and table // 4 != frames:
        raise MalformedDicom(f"Basic Offset Table has {table // 4} entries for {frames} frames")
    if table and pixels.first_offset != 0:
        raise MalformedDicom("Basic Offset Table does not start at 0")
    if not video and frames > pixels.fragments:
        raise MalformedDicom(f"NumberOfFrames {frames} but {pixels.fragments} fragments")


def _encapsulated(syntax: str) -> bool | None:
    """Whether ``syntax`` encapsulates pixel data; None for one pydicom does not know."""
    uid = UID(syntax)
    return uid.is_encapsulated if uid.is_transfer_syntax else None


def _number_of_frames(walked: Walked) -> int:
    text = _text(walked, "NumberOfFrames")
    if not text:
        return 1
    try:
        frames = int(text)
    except ValueError:
        raise MalformedDicom(f"NumberOfFrames {text[:20]!r} is not an integer") from None
    if not 1 <= frames <= MAX_FRAMES:
        raise MalformedDicom(f"NumberOfFrames {text[:20]} with Pixel Data")
    return frames


def _us(walked: Walked, keyword: str) -> int | None:
    found = walked.captured.get(_TAG_FOR[keyword])
    if found is None or len(found[1]) < 2:
        return None
    return int.from_bytes(found[1][:2], "little" if walked.little_endian else "big")


def _text(walked: Walked, keyword: str) -> str:
    found = walked.captured.get(_TAG_FOR[keyword])
    if found is None:
        return ""
    return found[1].decode("ascii", "replace").replace("\x00", "").strip()
