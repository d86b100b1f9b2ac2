"""The services that read pixel data -- frames, bulk data, rendered, and instances re-encoded
as explicit VR little endian -- answer the same trouble with the same status, over real HTTP
(noctis.api.dicomweb.failures): 404 for pixel data the instance does not have, 500 for
pixel data the archive holds but cannot read."""

from __future__ import annotations

import io

from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid
from test_dicomweb_bounds import OHIF_ACCEPT, replace_object, stored
from test_dicomweb_streaming import AS_EXPLICIT, web

__all__ = ["web"]  # the fixture, imported for these tests

BULK = "multipart/related; type=application/octet-stream"
PIXEL_READS = [
    ("/frames/1", OHIF_ACCEPT),
    ("/rendered", "image/png"),
    ("/bulkdata/7FE00010", BULK),
]


def _jpeg_with_fragments_for_one_frame_of_three(dw) -> bytes:
    """A JPEG baseline instance whose header says 3 frames over one fragment and an empty
    Basic Offset Table (ingest refuses that today; an object stored before might hold it)."""
    ds = dcmread(io.BytesIO(dw.sample_bytes("jpeg_baseline", SOPInstanceUID=generate_uid())))
    ds.NumberOfFrames = 3
    ds.PixelData = encapsulate([b"\xff\xd8 one frame \xff\xd9"], has_bot=False)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_pixel_data_that_cannot_be_located_is_the_same_500_everywhere(web, dw, runtime):
    """Frames answered 400, bulk data 404, rendered 400 and the re-encoded instance 500 for
    the same stored object before: the request was right, the archive cannot read it."""
    url = stored(web, dw, dw.sample_bytes("jpeg_baseline", SOPInstanceUID=generate_uid()))
    replace_object(runtime, url, _jpeg_with_fragments_for_one_frame_of_three(dw))
    for path, accept in [*PIXEL_READS, ("", AS_EXPLICIT)]:
        answer = web.get(url + path, headers={"Accept": accept})
        assert answer.status_code == 500, (path, answer.text)
        detail = answer.json()["detail"]
        assert detail.startswith("the instance's pixel data cannot be read: "), (path, detail)
        assert "fewer fragments than frames" in detail, (path, detail)


def test_pixel_data_an_instance_does_not_have_is_404_everywhere(web, dw):
    """An instance without pixel data (a structured report): its frames, rendering and
    Pixel Data bulk data do not exist (frames and rendered answered 400 before)."""
    report = dw.sample_bytes(
        "test-SR.dcm",
        StudyInstanceUID=generate_uid(),
        SeriesInstanceUID=generate_uid(),
        SOPInstanceUID=generate_uid(),
    )
    url = stored(web, dw, report)
    for path, accept in PIXEL_READS:
        answer = web.get(url + path, headers={"Accept": accept})
        assert answer.status_code == 404, (path, answer.text)


def test_a_frame_beyond_the_last_is_404_on_frames_and_rendered(web, dw):
    url = stored(web, dw, dw.sample_bytes("multiframe", SOPInstanceUID=generate_uid()))
    for path, accept in [("/frames/11", OHIF_ACCEPT), ("/frames/11/rendered", "image/png")]:
        answer = web.get(url + path, headers={"Accept": accept})
        assert answer.status_code == 404, (path, answer.text)
        assert "frame 11 does not exist; the instance has 10" in answer.json()["detail"]
