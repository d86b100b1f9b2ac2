"""WADO-RS rendered images and thumbnails over HTTP."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from pydicom import dcmread


@pytest.fixture
def study(clients, dw):
    made = dw.build_study(["explicit", "jpeg2000", "jpeg_baseline", "multiframe", "deflate"])
    assert dw.stow(clients("rad_north"), list(made.files.values())).status_code == 200
    return made


def _instance(study, sop_uid: str) -> str:
    return (
        f"/dicom-web/studies/{study.study_uid}/series/{study.series[sop_uid]}/instances/{sop_uid}"
    )


def _image(response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def test_every_instance_renders_as_jpeg_by_default(clients, study):
    client = clients("rad_north")
    for sop_uid in study.files:
        response = client.get(_instance(study, sop_uid) + "/rendered")
        assert response.headers["content-type"] == "image/jpeg"
        assert _image(response).format == "JPEG"


def test_png_by_accept_header_or_query(clients, study):
    client = clients("rad_north")
    sop_uid = next(iter(study.files))
    by_header = client.get(_instance(study, sop_uid) + "/rendered", headers={"Accept": "image/png"})
    assert _image(by_header).format == "PNG"
    by_query = client.get(_instance(study, sop_uid) + "/rendered", params={"accept": "image/png"})
    assert _image(by_query).format == "PNG"
    refused = client.get(_instance(study, sop_uid) + "/rendered", headers={"Accept": "image/gif"})
    assert refused.status_code == 406


def test_window_and_viewport(clients, study):
    client = clients("rad_north")
    sop_uid = next(u for u, ts in study.syntaxes.items() if ts == "1.2.840.10008.1.2.1")
    url = _instance(study, sop_uid) + "/rendered"
    narrow = _image(client.get(url, params={"window": "0,1", "accept": "image/png"}))
    wide = _image(client.get(url, params={"window": "1000,4000,linear", "accept": "image/png"}))
    assert narrow.tobytes() != wide.tobytes()
    small = _image(client.get(url, params={"viewport": "64,32"}))
    assert small.size == (32, 32)  # a square image fit inside 64x32


def test_a_frame_of_a_multiframe_instance(clients, study):
    client = clients("rad_north")
    multi = _instance(study, next(u for u in study.files if _frames(study, u) == 10))
    png = {"accept": "image/png"}
    first = client.get(multi + "/frames/1/rendered", params=png)
    last = client.get(multi + "/frames/10/rendered", params=png)
    assert _image(first).tobytes() != _image(last).tobytes()
    assert client.get(multi + "/frames/11/rendered").status_code == 404
    assert client.get(multi + "/frames/1,2/rendered").status_code == 400


def _frames(study, sop_uid: str) -> int:
    ds = dcmread(io.BytesIO(study.files[sop_uid]), stop_before_pixels=True)
    return int(ds.get("NumberOfFrames") or 1)


@pytest.mark.parametrize(
    "params",
    [
        {"window": "abc"},
        {"window": "40"},
        {"window": "40,0"},
        {"window": "40,400,cubic"},
        {"viewport": "0,10"},
        {"viewport": "ten,10"},
        {"quality": "101"},
        {"quality": "good"},
    ],
)
def test_bad_rendering_parameters_are_400(clients, study, params):
    sop_uid = next(iter(study.files))
    response = clients("rad_north").get(_instance(study, sop_uid) + "/rendered", params=params)
    assert response.status_code == 400
    assert response.json()["detail"]


def test_thumbnails_at_every_level(clients, study):
    client = clients("rad_north")
    sop_uid = next(iter(study.files))
    urls = [
        f"/dicom-web/studies/{study.study_uid}/thumbnail",
        f"/dicom-web/studies/{study.study_uid}/series/{study.series[sop_uid]}/thumbnail",
        _instance(study, sop_uid) + "/thumbnail",
        _instance(study, sop_uid) + "/frames/1/thumbnail",
    ]
    for url in urls:
        picture = _image(client.get(url))
        assert max(picture.size) <= 128
    custom = _image(client.get(urls[0], params={"viewport": "40,40"}))
    assert max(custom.size) == 40


def test_series_rendered_is_multipart(clients, dw, study):
    sop_uid = next(iter(study.files))
    response = clients("rad_north").get(
        f"/dicom-web/studies/{study.study_uid}/series/{study.series[sop_uid]}/rendered"
    )
    [(headers, body)] = dw.split_multipart(response)
    assert headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(body)).format == "JPEG"
