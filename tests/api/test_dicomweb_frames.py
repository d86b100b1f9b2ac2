"""WADO-RS frames: stored syntax or decoded, in the framing OHIF's strict parser expects."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array

from noctis.dicom.transcode import EXPLICIT_VR_LITTLE_ENDIAN

OHIF_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
NATIVE_ACCEPT = 'multipart/related; type="application/octet-stream"'


@pytest.fixture
def study(clients, dw):
    made = dw.build_study(
        [
            "explicit",
            "big_endian",
            "jpeg2000",
            "jpeg_ls",
            "rle",
            "multiframe",
            "multiframe_rle",
            "deflate",
        ]
    )
    assert dw.stow(clients("rad_north"), list(made.files.values())).status_code == 200
    return made


def _url(study, sop_uid: str, frames: str) -> str:
    return (
        f"/dicom-web/studies/{study.study_uid}/series/{study.series[sop_uid]}"
        f"/instances/{sop_uid}/frames/{frames}"
    )


def _frames(dw, response) -> list[tuple[dict[str, str], bytes]]:
    assert response.status_code == 200, response.text
    return dw.split_multipart(response)


def _native(data: bytes) -> np.ndarray:
    ds = dcmread(io.BytesIO(data))
    array = pixel_array(ds, raw=True)
    return array if int(ds.get("NumberOfFrames") or 1) > 1 else array[np.newaxis]


def test_ohif_gets_each_frame_as_stored_with_its_transfer_syntax(clients, dw, study):
    client = clients("rad_north")
    for sop_uid, data in study.files.items():
        ds = dcmread(io.BytesIO(data))
        syntax = study.syntaxes[sop_uid]
        count = int(ds.get("NumberOfFrames") or 1)
        response = client.get(_url(study, sop_uid, "1"), headers={"Accept": OHIF_ACCEPT})
        [(headers, body)] = _frames(dw, response)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            assert headers["Content-Type"] == (
                f"application/octet-stream; transfer-syntax={syntax}"
            )
            assert body == next(generate_frames(ds.PixelData, number_of_frames=count))
        else:  # native frames are always sent as explicit VR little endian
            assert headers["Content-Type"].endswith(f"transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}")
            expected = _native(data)[0]
            assert body == expected.astype(expected.dtype.newbyteorder("<")).tobytes()


def test_several_frames_of_a_multiframe_instance(clients, dw, study):
    client = clients("rad_north")
    for kind_uid in study.files:
        ds = dcmread(io.BytesIO(study.files[kind_uid]))
        if int(ds.get("NumberOfFrames") or 1) < 10:
            continue
        response = client.get(_url(study, kind_uid, "2,10,3"), headers={"Accept": OHIF_ACCEPT})
        bodies = [body for _, body in _frames(dw, response)]
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            frames = list(generate_frames(ds.PixelData, number_of_frames=10))
            assert bodies == [frames[1], frames[9], frames[2]]
        else:
            array = _native(study.files[kind_uid])
            assert bodies == [array[i].astype("<u2").tobytes() for i in (1, 9, 2)]


def test_compressed_frames_are_decoded_when_native_is_asked(clients, dw, study):
    client = clients("rad_north")
    for sop_uid, syntax in study.syntaxes.items():
        if syntax in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"):
            continue
        response = client.get(_url(study, sop_uid, "1"), headers={"Accept": NATIVE_ACCEPT})
        [(headers, body)] = _frames(dw, response)
        assert headers["Content-Type"].endswith(f"transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}")
        expected = _native(study.files[sop_uid])[0]
        assert np.array_equal(
            np.frombuffer(body, dtype=expected.dtype).reshape(expected.shape), expected
        )


def test_the_image_media_type_of_the_stored_syntax(clients, dw, study):
    sop_uid = next(u for u, ts in study.syntaxes.items() if ts == "1.2.840.10008.1.2.4.90")
    response = clients("rad_north").get(
        _url(study, sop_uid, "1"), headers={"Accept": 'multipart/related; type="image/jp2"'}
    )
    [(headers, _)] = _frames(dw, response)
    assert headers["Content-Type"] == "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.90"
    refused = clients("rad_north").get(
        _url(study, sop_uid, "1"), headers={"Accept": 'multipart/related; type="image/jpeg"'}
    )
    assert refused.status_code == 406


def test_frames_of_native_data_are_read_by_range_not_whole(clients, dw, study, runtime):
    sop_uid = next(u for u, ts in study.syntaxes.items() if ts == "1.2.840.10008.1.2.1")
    store = runtime.store
    reads: list[str] = []
    original_get = store.get

    def spying_get(key: str) -> bytes:
        reads.append(key)
        return original_get(key)

    store.get = spying_get  # type: ignore[method-assign]
    try:
        response = clients("rad_north").get(_url(study, sop_uid, "1"))
    finally:
        store.get = original_get  # type: ignore[method-assign]
    assert response.status_code == 200
    assert reads == []


@pytest.mark.parametrize("frames", ["0", "a", "1,,x", "-1"])
def test_malformed_frame_lists_are_400(clients, study, frames):
    sop_uid = next(iter(study.files))
    assert clients("rad_north").get(_url(study, sop_uid, frames)).status_code == 400


def test_a_frame_beyond_the_last_is_404(clients, study):
    sop_uid = next(iter(study.files))
    response = clients("rad_north").get(_url(study, sop_uid, "1,2"))
    assert response.status_code == 404
    assert "frame 2" in response.json()["detail"]


def _count_range_reads(store):  # type: ignore[no-untyped-def]
    reads: list[str] = []
    original = store.get_range

    def counting(key: str, offset: int, length: int) -> bytes:
        reads.append(key)
        return original(key, offset, length)

    store.get_range = counting
    return reads, lambda: setattr(store, "get_range", original)


@pytest.mark.parametrize(("cache_mb", "reads_per_request"), [(128, 0), (0, 1)])
def test_a_frame_asked_again_comes_from_memory_unless_the_cache_is_off(
    clients, dw, study, runtime, settings, tokens, cache_mb, reads_per_request
):
    from noctis.api.app import create_app
    from support.web import client_for

    sop_uid = next(u for u, ts in study.syntaxes.items() if ts == "1.2.840.10008.1.2.1")
    app = create_app(settings.model_copy(update={"frame_cache_mb": cache_mb}), runtime)
    client = client_for(app, tokens["rad_north"])
    first = client.get(_url(study, sop_uid, "1"), headers={"Accept": OHIF_ACCEPT})
    reads, restore = _count_range_reads(runtime.store)
    try:
        again = [client.get(_url(study, sop_uid, "1"), headers={"Accept": OHIF_ACCEPT})]
        again.append(client.get(_url(study, sop_uid, "1"), headers={"Accept": NATIVE_ACCEPT}))
        rendered = client.get(
            _url(study, sop_uid, "1").replace("/frames/1", "/rendered"),
            headers={"Accept": "image/jpeg"},
        )
    finally:
        restore()
    assert first.status_code == 200 and rendered.status_code == 200
    for response in again:  # the same bytes, whether from memory or from the store
        assert _frames(dw, response)[0][1] == _frames(dw, first)[0][1]
    assert len(reads) == 3 * reads_per_request
