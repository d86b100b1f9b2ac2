"""Damaged and hostile instances: what ingest must refuse, each with the words its refusal
carries. Shared by the C-STORE and STOW tests so both peers see the same bytes.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import write_dataset
from pydicom.uid import CTImageStorage, JPEGBaseline8Bit, generate_uid

from noctis.dicom.part10 import part10_head
from support.dicomdata import small_ct

DEFLATED = "1.2.840.10008.1.2.1.99"


def part10(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def encapsulated_ct(frames: int = 1, fragments: int = 1, **attributes: object) -> Dataset:
    """A tiny JPEG baseline instance (fragment bytes are not a real JPEG: nothing decodes them
    at ingest) with ``fragments`` fragments and an empty Basic Offset Table."""
    ds = small_ct(BitsAllocated=8, BitsStored=8, HighBit=7, **attributes)
    ds.NumberOfFrames = frames
    ds.PixelData = encapsulate([b"\xff\xd8fragment\xff\xd9"] * fragments, has_bot=False)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return ds


@dataclass(frozen=True)
class Damaged:
    name: str
    data: bytes
    comment: str  # what the refusal's ErrorComment / Warning says (a part of it)


def damaged_instances() -> list[Damaged]:
    """Each a different way to be refused, all with fresh UIDs."""
    native = part10(small_ct(Rows=64, Columns=64, PixelData=bytes(64 * 64 * 2)))
    encapsulated = part10(encapsulated_ct(fragments=2))
    long_uid = "1." + "2" * 98
    value_cut = native.index(b"Doe^Jane") + 3  # inside PatientName's value
    return [
        Damaged("truncated-in-pixel-data", native[:-1000], "Pixel Data truncated"),
        Damaged("truncated-in-a-value", native[:value_cut], "runs past the end of the data set"),
        Damaged(
            "truncated-before-pixel-data",
            native[: native.index(b"\xe0\x7f\x10\x00") - 5],
            "data set ends inside an element header",
        ),
        Damaged("no-sequence-delimiter", encapsulated[:-8], "Pixel Data ends before its sequence"),
        Damaged(
            "frames-without-pixels",
            part10(small_ct(NumberOfFrames=3)),
            "Pixel Data holds 32 bytes, the header needs 96",
        ),
        Damaged(
            "2^31-frames-of-zero-size",
            part10(small_ct(NumberOfFrames=2**31, Rows=0, PixelData=b"")),
            "NumberOfFrames 2147483648 with Pixel Data",
        ),
        Damaged(
            "1e6-frames-of-zero-size",
            part10(small_ct(NumberOfFrames=1_000_000, Rows=0, PixelData=b"")),
            "Pixel Data with Rows 0 and Columns 4",
        ),
        Damaged(
            "1e6-frames-in-one-fragment",
            part10(encapsulated_ct(frames=1_000_000)),
            "NumberOfFrames 1000000 but 1 fragments",
        ),
        Damaged(
            "100-character-study-uid",
            part10(small_ct(StudyInstanceUID=long_uid)),
            "invalid StudyInstanceUID: 100 characters, more than 64",
        ),
        Damaged(
            "letters-in-study-uid",
            part10(small_ct(StudyInstanceUID="abc.def")),
            "invalid StudyInstanceUID: not only digits and dots",
        ),
        Damaged(
            "slash-in-series-uid",
            part10(small_ct(SeriesInstanceUID="1.2.3/4")),
            "invalid SeriesInstanceUID: not only digits and dots",
        ),
        Damaged(
            "leading-zero-in-sop-instance-uid",
            part10(small_ct(SOPInstanceUID="1.2.840.0099.1")),
            "invalid SOPInstanceUID: a component with a leading zero",
        ),
        Damaged(
            "leading-zero-in-series-uid",
            part10(small_ct(SeriesInstanceUID="1.2.03.4")),
            "invalid SeriesInstanceUID: a component with a leading zero",
        ),
        Damaged(
            "deflated-stream-cut-short",
            _deflated_ct()[:-40],
            "deflated data set ends inside its compressed stream",
        ),
        Damaged(
            "deflated-stream-corrupt",
            # a block type that does not exist (BFINAL 1, BTYPE 11) where the data set starts
            part10_head(CTImageStorage, generate_uid(), DEFLATED) + b"\x07" + bytes(64),
            "deflated data set is corrupt: invalid block type",
        ),
    ]


def _deflated_ct() -> bytes:
    """A small CT instance, its data set deflated whole (its stream ends with the file)."""
    ds = small_ct(Rows=64, Columns=64, PixelData=bytes(range(256)) * 32)
    data_set = io.BytesIO()
    write_dataset(_explicit_little(data_set), ds)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = deflater.compress(data_set.getvalue()) + deflater.flush()
    return part10_head(CTImageStorage, ds.SOPInstanceUID, DEFLATED) + stream


def write_deflated_bomb(path: Path, inflated_bytes: int) -> Path:
    """A well-formed deflated CT instance whose data set inflates to about ``inflated_bytes``
    (zeros in its pixel data, so it compresses ~1000:1), written as it is compressed: nothing
    here ever holds it inflated."""
    frames = max(1, inflated_bytes // (512 * 512 * 2))
    sop_uid = generate_uid()
    ds = small_ct(Rows=512, Columns=512, NumberOfFrames=frames, SOPInstanceUID=sop_uid)
    del ds.PixelData
    header = io.BytesIO()
    write_dataset(_explicit_little(header), ds)
    pixel_length = 512 * 512 * 2 * frames
    pixel_header = struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, pixel_length)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    with path.open("wb") as out:
        out.write(part10_head(CTImageStorage, sop_uid, DEFLATED))
        out.write(deflater.compress(header.getvalue() + pixel_header))
        left = pixel_length
        while left:
            piece = chunk[: min(left, len(chunk))]
            out.write(deflater.compress(piece))
            left -= len(piece)
        out.write(deflater.flush())
    return path


def _explicit_little(buffer: io.BytesIO) -> io.BytesIO:
    from pydicom.filebase import DicomFileLike

    fp = DicomFileLike(buffer)
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    return fp
