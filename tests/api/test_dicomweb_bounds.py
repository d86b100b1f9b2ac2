"""Bounded memory whatever is asked over HTTP, and damaged objects answered as such.

Each test runs the real app under uvicorn (``live_server``) and asserts what a client sees:
the status and its message, the parts of the answer, and the server process's memory (the
server runs in this process, so its resident set is sampled while the request runs).
"""

from __future__ import annotations

import ctypes
import io
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from fastapi import FastAPI
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import select

from noctis.api.app import create_app
from noctis.dicom.header import read_header
from noctis.index.models import Instance
from support.archive import point_instance_at
from support.web import client_for

OHIF_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
MB = 1 << 20
# 512 x 512 x 16 bits: 512 KB a frame
BIG_FRAMES = 96


def peak_growth(action: Callable[[], Any]) -> tuple[Any, int]:
    """(what ``action`` returned, the peak growth of this process's resident set while it ran).

    Memory the test freed before (building a large object, say) is handed back to the system
    first: left in the allocator, it would be reused unseen and hide what ``action`` costs."""
    ctypes.CDLL(None).malloc_trim(0)
    process = psutil.Process()
    baseline = peak = process.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.002):
            peak = max(peak, process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = action()
    finally:
        done.set()
        sampler.join()
    return result, max(peak, process.memory_info().rss) - baseline


def drain(response: httpx.Response) -> int:
    return sum(len(chunk) for chunk in response.iter_bytes())


@pytest.fixture
def app(settings, runtime) -> FastAPI:
    # Without the frame cache, what the answers cost is what shows in the resident set.
    return create_app(settings.model_copy(update={"frame_cache_mb": 0}), runtime)


@pytest.fixture
def web(live_server, tokens) -> Iterator[httpx.Client]:
    with client_for(live_server, tokens["rad_north"]) as client:
        yield client


def big_multiframe(dw) -> tuple[bytes, np.ndarray]:
    """A native multi-frame MR of BIG_FRAMES 512x512 16-bit frames (48 MB)."""
    ds = dcmread(io.BytesIO(dw.sample_bytes("multiframe")))
    pixels = np.arange(BIG_FRAMES * 512 * 512, dtype=np.uint16).reshape(BIG_FRAMES, 512, 512)
    ds.Rows = ds.Columns = 512
    ds.NumberOfFrames = BIG_FRAMES
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelData = pixels.tobytes()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), pixels


def stored(web: httpx.Client, dw, data: bytes) -> str:
    """STOW one instance; its instance URL under the DICOMweb root."""
    response = dw.stow(web, [data])
    assert response.status_code == 200, response.text
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    return (
        f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def replace_object(runtime, url: str, data: bytes, *, size: int | None = None) -> None:
    """Put ``data`` in the store and point the instance's index row at it, as an object
    stored before today's ingest checks (or damaged since) would be; ``size`` is what the
    index says the object's length is (default: the truth)."""
    sop_uid = url.rsplit("/", 1)[1]
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    _, offset = read_header(io.BytesIO(data))
    key = point_instance_at(
        runtime,
        sop_uid,
        data,
        size_bytes=len(data) if size is None else size,
        pixel_data_offset=offset,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        number_of_frames=min(int(ds.get("NumberOfFrames") or 1), 2**31 - 1),
    )
    with runtime.sessions.begin() as session:
        assert session.scalar(select(Instance.object_key).where(Instance.object_key == key))


def test_a_frame_asked_ten_thousand_times_is_sent_once(web, dw):
    url = stored(web, dw, dw.sample_bytes("multiframe", SOPInstanceUID=generate_uid()))
    frames = ",".join(["1"] * 5_000 + ["2"] * 5_000)
    response, growth = peak_growth(lambda: web.get(f"{url}/frames/{frames}"))
    assert response.status_code == 200, response.text
    parts = dw.split_multipart(response)
    assert len(parts) == 2  # frame 1 then frame 2, once each
    assert parts[0][1] != parts[1][1]
    assert growth < 32 * MB, growth  # 329 MB when every repeat was built into the answer


def test_more_distinct_frames_than_allowed_is_400_with_the_limit(web, dw):
    url = stored(web, dw, dw.sample_bytes("multiframe", SOPInstanceUID=generate_uid()))
    response = web.get(f"{url}/frames/{','.join(str(n) for n in range(1, 1002))}")
    assert response.status_code == 400
    assert "at most 1000 per request" in response.json()["detail"]


def test_a_large_answer_is_streamed_in_bounded_memory(web, dw):
    data, pixels = big_multiframe(dw)
    url = stored(web, dw, data)
    del data
    frames = ",".join(str(n) for n in range(1, BIG_FRAMES + 1))

    def fetch() -> tuple[int, str, list[bytes]]:
        # Keep only each part's first and last bytes: the client must not be what grows.
        with web.stream("GET", f"{url}/frames/{frames}", headers={"Accept": OHIF_ACCEPT}) as r:
            body = bytearray()
            for chunk in r.iter_bytes():
                body += chunk
                if len(body) > 4 * MB:
                    del body[: 3 * MB]
            return r.status_code, r.headers["content-type"], [bytes(body[-600:])]

    (status, content_type, tail), growth = peak_growth(fetch)
    assert status == 200 and content_type.startswith("multipart/related")
    boundary = content_type.split("boundary=")[1]
    assert tail[0].endswith(f"--{boundary}--\r\n".encode())
    last_frame = pixels[-1].tobytes()
    assert tail[0][: -len(boundary) - 8].endswith(last_frame[-(600 - len(boundary) - 8) :])
    assert growth < 24 * MB, growth  # the answer is 48 MB


def test_more_bytes_than_allowed_is_413(settings, runtime, tokens, dw, live_server):
    data, _ = big_multiframe(dw)
    with client_for(live_server, tokens["rad_north"]) as web:
        url = stored(web, dw, data)
    app = create_app(settings.model_copy(update={"frame_mb_per_request": 4}), runtime)
    with client_for(app, tokens["rad_north"]) as client:
        assert client.get(f"{url}/frames/1,2,3,4,5,6,7,8").status_code == 200  # 4 MB
        response = client.get(f"{url}/frames/1,2,3,4,5,6,7,8,9")
    assert response.status_code == 413
    assert "at most 4 MB per request" in response.json()["detail"]


def _crafted(dw, **changes: Any) -> bytes:
    ds = dcmread(io.BytesIO(dw.sample_bytes("explicit")))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_a_declared_frame_count_of_two_billion_with_empty_frames_is_refused_cheaply(
    web, dw, runtime
):
    """A stored header that contradicts its pixel data (stored before ingest checked it) is
    the archive's problem: 500 on every path that reads pixels, saying why, in bounded
    memory (noctis.api.dicomweb.failures)."""
    url = stored(web, dw, dw.sample_bytes("explicit", SOPInstanceUID=generate_uid()))
    replace_object(runtime, url, _crafted(dw, NumberOfFrames=2**31, Columns=0))
    paths = ["/frames/1", "/frames/2147483648", "/rendered", "/frames/1/rendered"]
    for path in [*paths, "/bulkdata/7FE00010"]:
        response, growth = peak_growth(lambda p=path: web.get(url + p))  # type: ignore[misc]
        assert response.status_code == 500, (path, response.text)
        assert "a frame of no bytes" in response.json()["detail"]
        assert growth < 16 * MB, (path, growth)


def test_a_million_declared_frames_are_never_listed_one_by_one(web, dw, runtime):
    url = stored(web, dw, dw.sample_bytes("explicit", SOPInstanceUID=generate_uid()))
    one_byte_frames = _crafted(
        dw,
        NumberOfFrames=1_000_000,
        Rows=1,
        Columns=1,
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
        PixelRepresentation=0,
        PixelData=bytes(range(256)) * 3907,  # 1,000,192 bytes
    )
    replace_object(runtime, url, one_byte_frames)
    response, growth = peak_growth(lambda: web.get(f"{url}/frames/999999"))
    assert response.status_code == 200, response.text
    assert dw.split_multipart(response)[0][1] == bytes([(999_999 - 1) % 256])
    assert growth < 16 * MB, growth
    beyond = web.get(f"{url}/frames/1000001")
    assert beyond.status_code == 404 and "has 1000000" in beyond.json()["detail"]


@pytest.mark.parametrize(
    ("path", "accept"),
    [("/frames/1", OHIF_ACCEPT), ("/rendered", "image/jpeg"), ("/bulkdata/7FE00010", "*/*")],
)
def test_an_object_shorter_than_the_index_says_is_a_500_never_short_frames(
    web, dw, runtime, path, accept, caplog
):
    data = dw.sample_bytes("explicit", SOPInstanceUID=generate_uid())
    url = stored(web, dw, data)
    replace_object(runtime, url, data[:-1000], size=len(data))
    response = web.get(url + path, headers={"Accept": accept})
    assert response.status_code == 500
    assert "the stored object is damaged" in response.json()["detail"]
    assert any(
        "damaged" in r.getMessage() or "ends at byte" in r.getMessage() for r in caplog.records
    )


def test_a_pixel_data_element_longer_than_the_object_is_a_500(web, dw, runtime):
    data = dw.sample_bytes("explicit", SOPInstanceUID=generate_uid())
    url = stored(web, dw, data)
    replace_object(runtime, url, data[:-1000])  # the index agrees; the element does not
    response = web.get(f"{url}/frames/1")
    assert response.status_code == 500
    assert "past the stored object" in response.json()["detail"]


def test_a_long_answer_checks_the_object_reaches_its_last_frame_before_starting(web, dw, runtime):
    data, _ = big_multiframe(dw)
    url = stored(web, dw, data)
    replace_object(runtime, url, data[: -3 * 512 * 1024], size=len(data))
    frames = ",".join(str(n) for n in range(1, BIG_FRAMES + 1))
    response = web.get(f"{url}/frames/{frames}", headers={"Accept": OHIF_ACCEPT})
    assert response.status_code == 500
    assert "the stored object is damaged" in response.json()["detail"]


@pytest.mark.parametrize(
    ("viewport", "message"),
    [
        ("128,128,200,0,100,100", "outside the 128x128 image"),
        ("128,128,0,0,100000,100000", None),  # clipped to the image: a 128x128 answer
        ("8192,8192", "more than 16777216 pixels"),
        ("100000,10", "between 1 and 8192"),
    ],
)
def test_a_huge_viewport_or_source_region_is_400_or_clipped_never_500(web, dw, viewport, message):
    url = stored(web, dw, dw.sample_bytes("explicit", SOPInstanceUID=generate_uid()))
    response, growth = peak_growth(
        lambda: web.get(f"{url}/rendered", params={"viewport": viewport, "accept": "image/png"})
    )
    if message is None:
        assert response.status_code == 200, response.text
        assert response.content.startswith(b"\x89PNG")
        assert response.content[16:24] == (128).to_bytes(4, "big") * 2  # width, height
    else:
        assert response.status_code == 400
        assert message in response.json()["detail"]
    assert growth < 32 * MB, growth


def test_a_short_object_in_a_study_retrieval_ends_the_answer_without_its_closing_delimiter(
    web, dw, runtime, caplog
):
    data = dw.sample_bytes("explicit", SOPInstanceUID=generate_uid())
    url = stored(web, dw, data)
    replace_object(runtime, url, data[:-1000], size=len(data))
    study_url = url.split("/series/")[0]
    accept = {"Accept": "multipart/related; type=application/dicom"}
    # The status went out before the object was read: the server cuts the answer short.
    with pytest.raises(httpx.HTTPError), web.stream("GET", study_url, headers=accept) as response:
        assert response.status_code == 200
        body = b"".join(response.iter_bytes())
        assert not body.rstrip().endswith(b"--")  # never a complete-looking answer
    assert any("indexed" in r.getMessage() for r in caplog.records)
