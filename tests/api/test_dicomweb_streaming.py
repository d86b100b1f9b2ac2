"""Large answers are streamed in bounded memory, over real HTTP: bulk data (a deflated
object inflated as it is sent, a plain one read range by range, an encapsulated one frame by
frame) and compressed instances asked as explicit VR little endian (decoded frame by frame,
the same bytes as pydicom's ``decompress`` gives). A stored object that turns out short is a
500 when that can be known before the answer starts, else an answer cut off before its
closing delimiter, never a complete-looking one."""

from __future__ import annotations

import hashlib
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)
from test_dicomweb_bounds import BIG_FRAMES, MB, big_multiframe, peak_growth, replace_object, stored

from support.archive import point_instance_at
from support.web import client_for

EXPLICIT = "1.2.840.10008.1.2.1"
AS_EXPLICIT = f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT}'
BULK = "multipart/related; type=application/octet-stream"
# 10000 x 10000 x 3 frames of 8 bits: 300 MB once inflated, about 1 MB deflated
DEFLATED_ROWS, DEFLATED_FRAMES = 10_000, 3
PATTERN = np.arange(251, dtype=np.uint8)  # a prime period: a wrong offset changes the hash


@pytest.fixture
def web(live_server, tokens) -> Iterator[httpx.Client]:
    with client_for(live_server, tokens["rad_north"]) as client:
        yield client


@dataclass
class Part:
    headers: dict[str, str]
    length: int
    sha256: str


@dataclass
class Streamed:
    status: int
    parts: list[Part]
    complete: bool  # the closing delimiter arrived


def stream_parts(client: httpx.Client, url: str, accept: str) -> Streamed:
    """GET ``url`` and read its multipart answer as it arrives, keeping a hash per part
    (the client must not be what grows); a cut-off answer is reported, not raised."""
    parts: list[Part] = []
    buffer = bytearray()
    digest, length, headers = None, 0, {}
    complete = False
    with client.stream("GET", url, headers={"Accept": accept}) as response:
        if response.status_code != 200:
            response.read()
            return Streamed(response.status_code, [], False)
        boundary = response.headers["content-type"].split("boundary=")[1].encode()
        delimiter = b"\r\n--" + boundary
        buffer += b"\r\n"  # the body starts with --boundary: match it like the others
        try:
            for chunk in response.iter_bytes():
                buffer += chunk
                while True:
                    if digest is None:  # before a part's headers
                        at = buffer.find(delimiter)
                        after = at + len(delimiter)
                        if at >= 0 and buffer[after : after + 4] == b"--\r\n":
                            complete = True
                            break
                        end = buffer.find(b"\r\n\r\n", after)
                        if at < 0 or end < 0:
                            break
                        lines = bytes(buffer[after + 2 : end]).decode().split("\r\n")
                        headers = dict(line.split(": ", 1) for line in lines)
                        del buffer[: end + 4]
                        digest, length = hashlib.sha256(), 0
                    at = buffer.find(delimiter)
                    usable = at if at >= 0 else max(0, len(buffer) - len(delimiter))
                    digest.update(buffer[:usable])
                    length += usable
                    del buffer[:usable]
                    if at < 0:
                        break
                    parts.append(Part(headers, length, digest.hexdigest()))
                    digest = None
        except httpx.HTTPError:
            pass  # cut off by the server
        return Streamed(response.status_code, parts, complete)


def instance_url(sop_uid: str, study_uid: str, series_uid: str) -> str:
    return f"/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"


def deflated_object(template: bytes) -> tuple[bytes, str]:
    """(``template``'s header over 300 MB of patterned pixels, deflated as it is written,
    never held whole; the pixels' sha256)."""
    ds = dcmread(io.BytesIO(template), stop_before_pixels=True)
    ds.Rows = ds.Columns = DEFLATED_ROWS
    ds.NumberOfFrames = DEFLATED_FRAMES
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelRepresentation = 0
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = DicomBytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, ds.file_meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    size = DEFLATED_ROWS * DEFLATED_ROWS * DEFLATED_FRAMES
    body.write(b"\xe0\x7f\x10\x00OB\0\0" + size.to_bytes(4, "little"))
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [head.getvalue(), deflater.compress(body.getvalue())]
    digest = hashlib.sha256()
    chunk = 251 * 4096  # whole periods, so every chunk is the same
    block = np.tile(PATTERN, 4096).tobytes()
    for offset in range(0, size, chunk):
        piece = block[: min(chunk, size - offset)]
        digest.update(piece)
        out.append(deflater.compress(piece))
    out.append(deflater.flush())
    return b"".join(out), digest.hexdigest()


def put_deflated(runtime, sop_uid: str, data: bytes) -> None:
    """The deflated object in the store and the instance's index row pointing at it, as an
    object stored before ingest bounded inflation (ingest keeps no pixel data offset)."""
    point_instance_at(
        runtime,
        sop_uid,
        data,
        pixel_data_offset=None,
        rows=DEFLATED_ROWS,
        columns=DEFLATED_ROWS,
        number_of_frames=DEFLATED_FRAMES,
    )


@pytest.fixture
def deflated_instance(clients, dw) -> tuple[str, bytes]:
    made = dw.build_study(["deflate"])
    assert dw.stow(clients("rad_north"), list(made.files.values())).status_code == 200
    sop_uid, data = next(iter(made.files.items()))
    return instance_url(sop_uid, made.study_uid, made.series[sop_uid]), data


def test_pixel_data_of_a_300_mb_deflated_object_is_inflated_as_it_is_sent(
    web, runtime, deflated_instance
):
    url, template = deflated_instance
    data, expected = deflated_object(template)
    assert len(data) < 2 * MB
    put_deflated(runtime, url.rsplit("/", 1)[1], data)
    metadata = web.get(f"{url}/metadata").json()[0]
    bulk_uri = metadata["7FE00010"]["BulkDataURI"].removeprefix(str(web.base_url).rstrip("/"))
    answer, growth = peak_growth(lambda: stream_parts(web, bulk_uri, BULK))
    assert answer.status == 200 and answer.complete
    [part] = answer.parts
    assert part.length == int(part.headers["Content-Length"]) == 300_000_000
    assert part.sha256 == expected
    assert growth < 64 * MB, growth  # 300 MB and more when inflated whole


def test_a_deflated_object_cut_short_ends_its_bulk_data_without_the_closing_delimiter(
    web, runtime, deflated_instance, caplog
):
    url, template = deflated_instance
    data, _ = deflated_object(template)
    put_deflated(runtime, url.rsplit("/", 1)[1], data[: len(data) // 2])
    answer = stream_parts(web, f"{url}/bulkdata/7FE00010", BULK)
    # Only inflating all of it could tell before the answer starts: it is cut off instead.
    assert answer.status == 200 and not answer.complete and not answer.parts
    assert any("ended early" in r.getMessage() for r in caplog.records)


def test_native_pixel_data_past_8_mb_is_read_range_by_range(web, dw, runtime):
    data, pixels = big_multiframe(dw)  # 48 MB
    url = stored(web, dw, data)
    expected = hashlib.sha256(pixels.tobytes()).hexdigest()
    del pixels
    answer, growth = peak_growth(lambda: stream_parts(web, f"{url}/bulkdata/7FE00010", BULK))
    assert answer.status == 200 and answer.complete
    assert [(p.length, p.sha256) for p in answer.parts] == [(BIG_FRAMES * 512 * 512 * 2, expected)]
    assert growth < 24 * MB, growth
    # The same object stored short: known before the answer starts, so a 500
    replace_object(runtime, url, data[: -3 * MB], size=len(data))
    short = web.get(f"{url}/bulkdata/7FE00010", headers={"Accept": BULK})
    assert short.status_code == 500
    assert "the stored object is damaged" in short.json()["detail"]


def compressed_multiframe(dw, syntax: str, frames: int, size: int) -> tuple[bytes, np.ndarray]:
    """A multi-frame MR of ``frames`` 12-bit ``size`` x ``size`` frames compressed in
    ``syntax`` (smooth gradients, each frame a little different)."""
    ds = dcmread(io.BytesIO(dw.sample_bytes("multiframe")))
    y, x = np.mgrid[0:size, 0:size]
    base = (x * 3 + y * 5) % 4096
    pixels = np.stack([(base + 7 * f) % 4096 for f in range(frames)]).astype(np.uint16)
    ds.Rows = ds.Columns = size
    ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.compress(syntax, pixels, generate_instance_uid=False)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), pixels


def as_implicit(data: bytes) -> bytes:
    ds = dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def decompressed_by_pydicom(data: bytes) -> bytes:
    """What the archive answered before re-encoding as it sends: the whole instance
    decompressed by pydicom and written as explicit VR little endian."""
    ds = dcmread(io.BytesIO(data))
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress(generate_instance_uid=False)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    _touch(ds)
    out = io.BytesIO()
    dcmwrite(out, ds, implicit_vr=False, little_endian=True, force_encoding=True)
    return out.getvalue()


def _touch(ds: Dataset) -> None:
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                _touch(item)


@pytest.mark.parametrize(
    "kind",
    [
        "rle-multiframe",
        "j2k-multiframe",
        "multiframe_rle",
        "jpeg_baseline",
        "jpeg2000",
        "implicit",
        "implicit-multiframe",
    ],
)
def test_an_instance_as_explicit_little_endian_is_what_pydicom_writes(web, dw, kind):
    if kind == "rle-multiframe":
        data, _ = compressed_multiframe(dw, RLELossless, 6, 64)
    elif kind == "j2k-multiframe":
        data, _ = compressed_multiframe(dw, JPEG2000Lossless, 4, 64)
    elif kind == "implicit-multiframe":
        data = as_implicit(dw.sample_bytes("multiframe", SOPInstanceUID=generate_uid()))
    else:  # pydicom's files: YBR JPEG (decoded as RGB), trailing padding after Pixel Data
        data = dw.sample_bytes(kind, SOPInstanceUID=generate_uid())
    url = stored(web, dw, data)
    response = web.get(url, headers={"Accept": AS_EXPLICIT})
    [(headers, body)] = dw.split_multipart(response)
    assert f"transfer-syntax={EXPLICIT}" in headers["Content-Type"]
    assert int(headers["Content-Length"]) == len(body)
    assert body == decompressed_by_pydicom(data)


def test_a_large_compressed_instance_is_decoded_frame_by_frame_as_it_is_sent(web, dw, runtime):
    data, pixels = compressed_multiframe(dw, RLELossless, 200, 512)  # 100 MB decoded
    url = stored(web, dw, data)
    expected = decompressed_by_pydicom(data)
    expected_hash, expected_length = hashlib.sha256(expected).hexdigest(), len(expected)
    del expected, pixels
    answer, growth = peak_growth(lambda: stream_parts(web, url, AS_EXPLICIT))
    assert answer.status == 200 and answer.complete
    [part] = answer.parts
    assert (part.length, part.sha256) == (expected_length, expected_hash)
    assert int(part.headers["Content-Length"]) == expected_length
    # 320 MB when decoded whole; 54 MB more if its 54 MB of fragments were read at once
    assert growth < 24 * MB, growth
    # Its frames as bulk data: one part per frame, as stored
    stored_frames = list(generate_frames(dcmread(io.BytesIO(data)).PixelData, number_of_frames=200))
    bulk = stream_parts(web, f"{url}/bulkdata/7FE00010", BULK)
    assert bulk.complete
    assert [p.sha256 for p in bulk.parts] == [hashlib.sha256(f).hexdigest() for f in stored_frames]
    # The same object stored short: its end is read before the answer starts
    replace_object(runtime, url, data[:-1000], size=len(data))
    short = web.get(url, headers={"Accept": AS_EXPLICIT})
    assert short.status_code == 500
    assert "the stored object is damaged" in short.json()["detail"]


def test_a_short_compressed_object_in_a_study_retrieval_ends_it_without_the_closing_delimiter(
    web, dw, runtime, caplog
):
    made = dw.build_study(["multiframe_rle", "rle"])
    assert dw.stow(web, list(made.files.values())).status_code == 200
    sop_uid = next(iter(made.files))
    data = made.files[sop_uid]
    url = instance_url(sop_uid, made.study_uid, made.series[sop_uid])
    replace_object(runtime, url, data[:-1000], size=len(data))
    # Two instances: the answer starts before either is read, so it is cut off instead.
    answer = stream_parts(web, f"/dicom-web/studies/{made.study_uid}", AS_EXPLICIT)
    assert answer.status == 200 and not answer.complete
    assert any(sop_uid in r.getMessage() for r in caplog.records)


def test_a_large_implicit_vr_instance_is_re_encoded_as_it_is_sent(web, dw):
    data, _ = big_multiframe(dw)
    data = as_implicit(data)  # 48 MB
    url = stored(web, dw, data)
    expected = decompressed_by_pydicom(data)
    expected_hash, expected_length = hashlib.sha256(expected).hexdigest(), len(expected)
    del expected
    answer, growth = peak_growth(lambda: stream_parts(web, url, AS_EXPLICIT))
    assert answer.status == 200 and answer.complete
    [part] = answer.parts
    assert (part.length, part.sha256) == (expected_length, expected_hash)
    assert growth < 24 * MB, growth  # 110 MB when read, parsed and written whole
