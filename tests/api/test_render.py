"""The pure image functions: frame layouts, transcoding, DICOM JSON and rendering."""

from __future__ import annotations

import importlib.util
import io
import warnings
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array

from noctis.dicom import render
from noctis.dicom.header import read_header
from noctis.dicom.json import dataset_to_json, find_bulk, value_json
from noctis.dicom.reencode import to_explicit_little_endian
from noctis.dicom.transcode import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    FrameError,
    StoredObjectTruncated,
    image_attributes,
    locate_frames,
    native_array,
    native_frame,
    number_of_frames,
)

CORRUPT = {  # pydicom test files that are broken on purpose
    "badVR.dcm",
    "MR_truncated.dcm",
    "meta_missing_tsyntax.dcm",
    "nested_priv_SQ.dcm",
    "emri_small_jpeg_2k_lossless_too_short.dcm",
    "JPEG2000-embedded-sequence-delimiter.dcm",
    "JPEG-lossy.dcm",
}


def _sample_files() -> list[str]:
    # Local files only: get_testdata_files() would try to download missing ones.
    folders = [Path(pydicom.data.__file__).parent / "test_files"]
    spec = importlib.util.find_spec("data_store")  # the pydicom-data package
    if spec is not None and spec.origin:
        folders.append(Path(spec.origin).parent / "data")
    return sorted(str(p) for folder in folders for p in folder.glob("*.dcm"))


def _images() -> list[str]:
    paths = []
    for path in _sample_files():
        if path.rsplit("/", 1)[-1] in CORRUPT:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, offset = read_header(open(path, "rb"))  # noqa: SIM115
        except Exception:
            continue
        if offset is not None:
            paths.append(path)
    return paths


IMAGES = _images()


def _locate(data: bytes):
    _, offset = read_header(io.BytesIO(data))
    return locate_frames(lambda o, n: data[o : o + n], offset, len(data))


def _read(data: bytes, ranges) -> bytes:
    return b"".join(data[o : o + n] for o, n in ranges)


def test_there_are_many_sample_images():
    assert len(IMAGES) > 100


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.rsplit("/", 1)[-1])
def test_frame_layout_matches_pydicom(path):
    data = open(path, "rb").read()  # noqa: SIM115
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header, layout = _locate(data)
        full = dcmread(io.BytesIO(data))
        count = number_of_frames(full)
        assert layout.number_of_frames == count
        if layout.encapsulated:
            expected = list(generate_frames(full.PixelData, number_of_frames=count))
            assert [_read(data, f) for f in layout.frames] == expected
            return
        arrays = pixel_array(full, raw=True)
        arrays = arrays if count > 1 else arrays[np.newaxis]
        for index, ranges in enumerate(layout.frames):
            frame = native_frame(header, layout, index, _read(data, ranges))
            got = native_array(header, frame, raw=True).reshape(arrays[index].shape)
            assert np.array_equal(got, arrays[index])


def test_a_file_without_rows_has_no_frames():
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    del ds.Rows
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    with pytest.raises(FrameError, match="no Rows"):
        _locate(out.getvalue())


def test_a_zero_frame_size_or_a_huge_frame_count_costs_no_memory():
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.NumberOfFrames = 2**31
    ds.Columns = 0
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    with pytest.raises(FrameError, match="no bytes"):
        _locate(out.getvalue())
    ds.Columns, ds.Rows, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 8, 8, 7
    ds.PixelData = bytes(1 << 20)  # a million 1-pixel frames, declared as 2^31
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    with pytest.raises(FrameError, match="shorter"):
        _locate(out.getvalue())
    ds.NumberOfFrames = 1 << 20
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    _, layout = _locate(out.getvalue())
    assert layout.number_of_frames == 1 << 20
    assert len(layout.frames[-1]) == 1 and layout.frames[-1][0][1] == 1
    assert not isinstance(layout.frames, (tuple, list))  # computed per frame when asked


def test_an_object_shorter_than_its_pixel_data_element_is_damaged_not_malformed():
    data = open(get_testdata_file("CT_small.dcm"), "rb").read()  # noqa: SIM115
    with pytest.raises(StoredObjectTruncated):
        _locate(data[:-200])  # the last 138 bytes follow the pixel data


def test_transcoding_a_compressed_instance_to_explicit_little_endian():
    data = open(get_testdata_file("MR_small_jp2klossless.dcm"), "rb").read()  # noqa: SIM115
    out = dcmread(io.BytesIO(to_explicit_little_endian(data)))
    assert out.file_meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN
    assert np.array_equal(out.pixel_array, dcmread(io.BytesIO(data)).pixel_array)


def test_transcoding_big_endian_keeps_the_pixels():
    data = open(get_testdata_file("MR_small_bigendian.dcm"), "rb").read()  # noqa: SIM115
    out = dcmread(io.BytesIO(to_explicit_little_endian(data)))
    assert out.file_meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN
    assert np.array_equal(out.pixel_array, dcmread(io.BytesIO(data)).pixel_array)
    assert out.PatientName == dcmread(io.BytesIO(data)).PatientName


# DICOM JSON


def test_json_round_trips_through_pydicom_with_bulk_data_uris():
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    document = dataset_to_json(ds, bulk_prefix="http://x/bulk/")
    assert document["7FE00010"]["BulkDataURI"] == "http://x/bulk/7FE00010"
    back = Dataset.from_json(document, bulk_data_uri_handler=lambda *_: b"")
    assert back.PatientName == ds.PatientName
    assert back.ImagePositionPatient == ds.ImagePositionPatient
    assert back.Rows == ds.Rows


def test_json_value_rules():
    assert value_json("PN", "Yamada^Tarou=山田^太郎") == {
        "vr": "PN",
        "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}],
    }
    assert value_json("IS", "12") == {"vr": "IS", "Value": [12]}
    assert value_json("DS", "1.50") == {"vr": "DS", "Value": [1.5]}
    assert value_json("FD", float("nan")) == {"vr": "FD", "Value": [None]}
    assert value_json("AT", 0x00100010) == {"vr": "AT", "Value": ["00100010"]}
    assert value_json("LO", "") == {"vr": "LO"}
    assert value_json("CS", ["CT", "MR"]) == {"vr": "CS", "Value": ["CT", "MR"]}


def test_nested_bulk_data_paths_resolve():
    ds = Dataset()
    item = Dataset()
    item.add_new(0x00091010, "OB", b"\x01" * 4096)
    ds.add_new(0x00540016, "SQ", [item])
    document = dataset_to_json(ds, bulk_prefix="B/")
    uri = document["00540016"]["Value"][0]["00091010"]["BulkDataURI"]
    assert uri == "B/00540016/0/00091010"
    assert find_bulk(ds, uri.removeprefix("B/")).value == b"\x01" * 4096
    assert find_bulk(ds, "00540016/5/00091010") is None


# Rendering


def _ct() -> tuple[Dataset, np.ndarray]:
    data = open(get_testdata_file("CT_small.dcm"), "rb").read()  # noqa: SIM115
    header, layout = _locate(data)
    image = image_attributes(header)
    return image, render.frame_array(image, layout, 0, _read(data, layout.frames[0]))


def test_window_parameters():
    assert render.parse_window("40,400") == render.Window(40, 400, "linear")
    assert render.parse_window("40,400,SIGMOID").function == "sigmoid"
    for bad in ("40", "a,b", "40,0", "40,400,cubic", "40,-1"):
        with pytest.raises(render.RenderError):
            render.parse_window(bad)
    assert render.parse_viewport("64,32") == render.Viewport(64, 32)
    assert render.parse_viewport("64,32,0,0,10,10").region == (0, 0, 10, 10)
    for bad in ("0,1", "1", "a,b", "10,10,-1,0,5,5"):
        with pytest.raises(render.RenderError):
            render.parse_viewport(bad)


def test_linear_window_follows_the_standard():
    values = np.array([-1000.0, 39.5, 40.0, 240.0, 1000.0])
    out = render.apply_window(values, render.Window(40, 400))
    assert out[0] == 0 and out[-1] == 255
    assert 126 <= out[2] <= 128  # the center maps to mid-gray
    assert out[3] == 255


def test_rescale_and_the_data_set_window_are_applied():
    image, pixels = _ct()
    display = render.to_display(image, pixels)
    assert display.dtype == np.uint8 and display.shape == pixels.shape
    slope, intercept = float(image.RescaleSlope), float(image.RescaleIntercept)
    hu = pixels * slope + intercept
    expected = render.apply_window(hu, render.Window(40, 400))
    explicit = render.to_display(image, pixels, render.Window(40, 400))
    assert np.array_equal(explicit, expected)


def test_monochrome1_is_inverted():
    image, pixels = _ct()
    normal = render.to_display(image, pixels, render.Window(40, 400))
    image.PhotometricInterpretation = "MONOCHROME1"
    inverted = render.to_display(image, pixels, render.Window(40, 400))
    assert np.array_equal(inverted, 255 - normal)


def test_voi_lut_sequence_is_used():
    ds = dcmread(get_testdata_file("vlut_04.dcm"))
    image = image_attributes(ds)
    display = render.to_display(image, ds.pixel_array)
    assert display.dtype == np.uint8 and display.max() > display.min()


def test_palette_and_rgb_become_rgb():
    for name in ("OBXXXX1A.dcm", "SC_rgb.dcm", "SC_rgb_16bit.dcm"):
        ds = dcmread(get_testdata_file(name))
        display = render.to_display(image_attributes(ds), ds.pixel_array)
        assert display.shape[-1] == 3 and display.dtype == np.uint8, name


def test_encoding_and_viewport_fit():
    image, pixels = _ct()
    jpeg = render.render(image, pixels, media_type=render.JPEG, viewport=render.Viewport(64, 32))
    picture = Image.open(io.BytesIO(jpeg))
    assert picture.format == "JPEG" and picture.size == (32, 32)
    png = render.render(image, pixels, media_type=render.PNG)
    assert Image.open(io.BytesIO(png)).size == (pixels.shape[1], pixels.shape[0])
    cropped = render.render(
        image, pixels, media_type=render.PNG, viewport=render.Viewport(10, 10, (0, 0, 20, 20))
    )
    assert Image.open(io.BytesIO(cropped)).size == (10, 10)


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.rsplit("/", 1)[-1])
def test_rendering_pixels_match_pydicom(path):
    data = open(path, "rb").read()  # noqa: SIM115
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header, layout = _locate(data)
        if layout.encapsulated:
            return  # decoded by pydicom itself
        image = image_attributes(header)
        full = dcmread(io.BytesIO(data))
        expected = pixel_array(full, index=0)
        got = render.frame_array(image, layout, 0, _read(data, layout.frames[0]))
        assert np.array_equal(got.reshape(expected.shape), expected)
        assert render.to_display(image, got).dtype == np.uint8


def test_lookup_tables_match_the_direct_computation():
    image, pixels = _ct()
    window = render.Window(40, 400, "sigmoid")
    slope, intercept = float(image.RescaleSlope), float(image.RescaleIntercept)
    direct = render.apply_window(pixels.astype(np.float64) * slope + intercept, window)
    assert np.array_equal(render.to_display(image, pixels, window), direct)


def test_the_layout_cache_weighs_a_layout_by_its_fragments():
    from noctis.api.dicomweb.cache import DicomWebCache
    from noctis.dicom.transcode import PixelLayout

    cache = DicomWebCache()
    many = PixelLayout("1.2.840.10008.1.2.4.50", tuple(((8 * i, 8),) for i in range(1 << 18)))
    for key in ("a", "b"):
        cache.layouts.put(key, (Dataset(), many))
    assert len(cache.layouts) == 1  # not 20,000 of these
    for index in range(100):
        cache.layouts.put(
            str(index), (Dataset(), PixelLayout("1.2.840.10008.1.2.4.50", (((0, 8),),)))
        )
    assert len(cache.layouts) == 101  # the large one and 100 small ones


def test_headers_read_in_chunks_match_pydicom_s_for_every_sample():
    """The chunked header reader (deflated objects inflated only up to Pixel Data) gives the
    very metadata pydicom's whole-file reader gives, for each of pydicom's test files."""
    from noctis.dicom.deflated import DEFLATED, read_header_stream

    compared = deflated = 0
    for path in sorted(Path(pydicom.data.__file__).parent.joinpath("test_files").glob("*.dcm")):
        data = path.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                expected = dcmread(io.BytesIO(data), stop_before_pixels=True)
            except Exception:
                continue  # not a file pydicom reads either
            chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]
            header, _ = read_header_stream(chunks)
        assert dataset_to_json(header, bulk_prefix="b/") == dataset_to_json(
            expected, bulk_prefix="b/"
        ), path.name
        compared += 1
        deflated += str(header.file_meta.get("TransferSyntaxUID", "")) == DEFLATED
    assert compared > 60 and deflated >= 1


def test_a_deflated_object_without_pixel_data_is_read_to_its_end():
    """The whole data set is the header: inflation must stop at the end of the deflate
    stream, before the byte pydicom pads it with (it looped forever on that byte)."""
    from noctis.dicom.deflated import read_header_stream

    ds = dcmread(get_testdata_file("image_dfl.dcm"))
    del ds.PixelData
    ds.ImageComments = "x" * 1000  # makes the deflated stream odd, so it is padded
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    header, has_pixels = read_header_stream([data[i : i + 100] for i in range(0, len(data), 100)])
    assert not has_pixels
    assert header.ImageComments == "x" * 1000 and header.PatientName == ds.PatientName
