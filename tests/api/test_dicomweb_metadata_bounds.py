"""Metadata never inflates pixel data: a deflated object whose few hundred KB inflate to
100 MB is answered (study, series and instance metadata, and the worker's series bundle) with
only its header inflated, over real HTTP, in bounded memory."""

from __future__ import annotations

import io
import json
import threading
import zlib

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid
from sqlalchemy import update
from test_dicomweb_bounds import MB, peak_growth

from noctis.dicom.metadata import bundle_key, decode_bundle
from noctis.index.models import Instance
from noctis.worker.series_metadata import series_metadata
from support.archive import point_instance_at
from support.web import client_for

INFLATED = 100 * MB


def deflate_bomb(template: bytes, frames: int = 1) -> bytes:
    """``template``'s header over 100 MB of zero pixels (in ``frames`` frames), deflated
    (about 100 KB)."""
    ds = dcmread(io.BytesIO(template))
    ds.Rows, ds.Columns = 10_000 // frames, 10_000
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelRepresentation = 0
    ds.PixelData = np.zeros(INFLATED, dtype=np.uint8).tobytes()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture
def bomb_series(clients, dw, runtime):
    """A series of four deflated instances (enough for a bundle), one of them the bomb put in
    the store and the index directly, as an object stored before ingest bounded inflation."""
    made = dw.build_study(["deflate"] * 4)
    series_uid = next(iter(made.series.values()))
    parts = []
    for data in made.files.values():  # one series for all four
        ds = dcmread(io.BytesIO(data))
        ds.SeriesInstanceUID = series_uid
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        parts.append(out.getvalue())
    assert dw.stow(clients("rad_north"), parts).status_code == 200
    bomb_uid = next(iter(made.files))
    bomb = deflate_bomb(parts[0])
    assert len(bomb) < MB and len(zlib.compress(bomb)) < MB
    key = point_instance_at(runtime, bomb_uid, bomb, pixel_data_offset=None)
    return made.study_uid, series_uid, bomb_uid, key


def test_metadata_of_a_deflate_bomb_is_read_without_inflating_its_pixels(
    live_server, tokens, bomb_series
):
    study_uid, series_uid, bomb_uid, _ = bomb_series
    urls = [
        f"/dicom-web/studies/{study_uid}/metadata",
        f"/dicom-web/studies/{study_uid}/series/{series_uid}/metadata",
        f"/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{bomb_uid}/metadata",
    ]
    answers: list = [None] * 3

    def three_in_parallel() -> None:
        def fetch(index: int) -> None:
            with client_for(live_server, tokens["rad_north"]) as client:
                answers[index] = client.get(urls[index])

        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    _, growth = peak_growth(three_in_parallel)
    assert growth < 40 * MB, growth  # 2 GB for three such reads when pixels were inflated
    for response in answers:
        assert response.status_code == 200, response.text
        instance = next(i for i in response.json() if i["00080018"]["Value"] == [bomb_uid])
        assert instance["00280010"]["Value"] == [10_000]
        pixel_uri = instance["7FE00010"]["BulkDataURI"]
        assert pixel_uri.endswith(f"/instances/{bomb_uid}/bulkdata/7FE00010")
    assert len(answers[0].json()) == 4


def test_the_series_bundle_of_a_deflate_bomb_is_built_without_inflating_its_pixels(
    runtime, bomb_series, live_server, tokens
):
    study_uid, series_uid, bomb_uid, bomb_key = bomb_series
    outcome, growth = peak_growth(
        lambda: series_metadata(
            runtime, facility="north", study_instance_uid=study_uid, series_instance_uid=series_uid
        )
    )
    assert outcome == "built"
    assert growth < 24 * MB, growth
    bundle = decode_bundle(runtime.store.get(bundle_key("north", study_uid, series_uid)))
    fragment = json.loads(bundle[bomb_key])
    assert fragment["00080018"]["Value"] == [bomb_uid]
    assert "BulkDataURI" in fragment["7FE00010"]
    with client_for(live_server, tokens["rad_north"]) as client:
        response = client.get(f"/dicom-web/studies/{study_uid}/series/{series_uid}/metadata")
    assert response.status_code == 200
    assert len(response.json()) == 4


def test_a_header_that_inflates_past_the_limit_is_left_out_not_held(
    live_server, tokens, bomb_series, runtime, caplog
):
    """70 MB of a document element before Pixel Data: past the 64 MB a header may inflate
    to. The instance is left out of the study's metadata (logged); the others are answered."""
    study_uid, series_uid, bomb_uid, bomb_key = bomb_series
    ds = dcmread(io.BytesIO(runtime.store.get(bomb_key)), stop_before_pixels=True)
    ds.EncapsulatedDocument = bytes(70 * MB)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    key = f"replaced/{generate_uid()}"
    runtime.store.put(key, io.BytesIO(out.getvalue()), len(out.getvalue()))
    with runtime.sessions.begin() as session:
        session.execute(
            update(Instance)
            .where(Instance.sop_instance_uid == bomb_uid)
            .values(object_key=key, size_bytes=len(out.getvalue()))
        )
    del ds, out
    with client_for(live_server, tokens["rad_north"]) as client:
        url = f"/dicom-web/studies/{study_uid}/metadata"
        response, growth = peak_growth(lambda: client.get(url))
        instance = f"/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{bomb_uid}"
        bulk = client.get(f"{instance}/bulkdata/00420011", headers={"Accept": "multipart/related"})
    assert response.status_code == 200
    answered = {i["00080018"]["Value"][0] for i in response.json()}
    assert len(answered) == 3 and bomb_uid not in answered
    assert growth < 128 * MB, growth  # at most the 64 MB limit held; 170 MB inflated whole
    assert bulk.status_code == 500 and "inflates past 64 MB" in bulk.json()["detail"]


def test_a_frame_deep_in_a_deflate_bomb_costs_its_own_size(
    clients, dw, runtime, live_server, tokens
):
    """Frames and renderings of a deflated object are inflated front to back, keeping only
    the frames asked for: frame 100 of 100 (1 MB each) without holding the other 99."""
    made = dw.build_study(["deflate"])
    assert dw.stow(clients("rad_north"), list(made.files.values())).status_code == 200
    sop_uid, data = next(iter(made.files.items()))
    bomb = deflate_bomb(data, frames=100)
    point_instance_at(
        runtime,
        sop_uid,
        bomb,
        pixel_data_offset=None,
        rows=100,
        columns=10_000,
        number_of_frames=100,
    )
    instance = (
        f"/dicom-web/studies/{made.study_uid}/series/{made.series[sop_uid]}/instances/{sop_uid}"
    )
    with client_for(live_server, tokens["rad_north"]) as client:
        for path, accept in [
            ("/frames/100", "multipart/related; type=application/octet-stream; transfer-syntax=*"),
            ("/frames/100/rendered", "image/png"),
            ("/frames/99,100,1", "multipart/related; type=application/octet-stream"),
        ]:
            response, growth = peak_growth(
                lambda p=path, a=accept: client.get(instance + p, headers={"Accept": a})
            )
            assert response.status_code == 200, (path, response.text)
            assert growth < 24 * MB, (path, growth)  # 100 MB when inflated whole
        parts = dw.split_multipart(response)
        assert [len(body) for _, body in parts] == [100 * 10_000] * 3


def test_a_deflate_bomb_asked_as_explicit_little_endian_is_inflated_as_it_is_sent(
    live_server, tokens, bomb_series
):
    study_uid, series_uid, bomb_uid, _ = bomb_series
    url = f"/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{bomb_uid}"
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'

    def fetch() -> tuple[int, bytes, int]:
        with (
            client_for(live_server, tokens["rad_north"]) as client,
            client.stream("GET", url, headers={"Accept": accept}) as response,
        ):
            head, size = b"", 0
            for chunk in response.iter_bytes():
                if len(head) < 8192:
                    head += chunk[:8192]
                size += len(chunk)
            return response.status_code, head, size

    (status, head, size), growth = peak_growth(fetch)
    assert status == 200
    assert size > INFLATED  # the whole instance, pixels inflated
    assert growth < 24 * MB, growth  # 100 MB of pixels, and pydicom's copies, when decoded
    part = head.split(b"\r\n\r\n", 1)[1]
    meta = dcmread(io.BytesIO(part + bytes(64)), stop_before_pixels=True).file_meta
    assert meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
