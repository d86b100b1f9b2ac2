"""Reading deflated objects that turn out damaged, over real HTTP: the read side inflates with
ingest's inflater (`noctis.dicom.inflate`), so a corrupt stream is a 500 that says so (not an
unhandled zlib error), a stream cut short never gives a complete-looking answer, and nothing
inflates past NOCTIS_MAX_INFLATED_MB. Objects are put in the store as if stored before
today's ingest checks, or damaged since."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_dicomweb_streaming import AS_EXPLICIT, instance_url, stream_parts, web

from support.archive import point_instance_at
from support.damaged import write_deflated_bomb

__all__ = ["web"]  # the fixture, imported for these tests

FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"


def _data_set_start(data: bytes) -> int:
    # the File Meta group starts with its group length (UL, explicit VR little endian)
    return 132 + 12 + int.from_bytes(data[140:144], "little")


def _header_then(template: bytes, pixels: Callable[[bytes, Any], bytes]) -> bytes:
    """``template`` (a deflated object) re-deflated up to its Pixel Data value, a flush,
    then ``pixels`` as the rest of the stream: its header reads, its pixels are what we say."""
    start = _data_set_start(template)
    data_set = zlib.decompress(template[start:], -zlib.MAX_WBITS)
    value = data_set.index(b"\xe0\x7f\x10\x00") + 12
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = deflater.compress(data_set[:value]) + deflater.flush(zlib.Z_FULL_FLUSH)
    return template[:start] + head + pixels(data_set[value:], deflater)


def corrupt(template: bytes) -> bytes:
    """A block type that does not exist (BFINAL 1, BTYPE 11) where the pixels start."""
    damaged = _header_then(template, lambda _, __: b"\x07" + bytes(64))
    with pytest.raises(zlib.error, match="invalid block type"):
        zlib.decompress(damaged[_data_set_start(damaged) :], -zlib.MAX_WBITS)
    return damaged


def cut_short(template: bytes) -> bytes:
    """The pixels' deflated stream cut in its middle."""

    def half(pixels: bytes, deflater: Any) -> bytes:
        rest = deflater.compress(pixels) + deflater.flush()
        return rest[: len(rest) // 2]

    return _header_then(template, half)


@pytest.fixture
def deflated(clients, dw, runtime) -> tuple[str, bytes]:
    """(URL of a stored deflated instance, its bytes)."""
    made = dw.build_study(["deflate"])
    assert dw.stow(clients("rad_north"), list(made.files.values())).status_code == 200
    sop_uid, data = next(iter(made.files.items()))
    return instance_url(sop_uid, made.study_uid, made.series[sop_uid]), data


def _replace(runtime, url: str, data: bytes, **row: object) -> None:
    point_instance_at(runtime, url.rsplit("/", 1)[1], data, pixel_data_offset=None, **row)


def test_a_corrupt_deflated_object_is_a_500_that_says_so(web, runtime, deflated):
    url, template = deflated
    _replace(runtime, url, corrupt(template))
    for path, accept in [
        ("/frames/1", FRAMES),
        ("/rendered", "image/png"),
        ("/bulkdata/7FE00010", "multipart/related; type=application/octet-stream"),
    ]:
        answer = web.get(url + path, headers={"Accept": accept})
        assert answer.status_code == 500, (path, answer.text)
        detail = answer.json()["detail"]
        assert "the stored object is damaged" in detail and "corrupt" in detail, (path, detail)
    # the header still reads: the instance's metadata is answered
    assert web.get(f"{url}/metadata").status_code == 200


def test_a_deflated_object_cut_short_is_never_answered_as_complete(web, runtime, deflated):
    url, template = deflated
    _replace(runtime, url, cut_short(template))
    frame = web.get(f"{url}/frames/1", headers={"Accept": FRAMES})
    assert frame.status_code == 500 and "cut short" in frame.json()["detail"]
    # Re-encoded as it is sent: the answer has started when the stream ends, so it is cut
    # off before its closing delimiter (it used to end as if the instance were whole).
    answer = stream_parts(web, url, AS_EXPLICIT)
    assert answer.status == 200 and not answer.complete


def test_reading_a_deflated_object_inflates_no_more_than_the_cap(
    web, runtime, settings, deflated, tmp_path: Path
):
    url, _ = deflated
    bomb = write_deflated_bomb(tmp_path / "bomb.dcm", 4 << 20).read_bytes()  # 8 frames of 512 KB
    _replace(runtime, url, bomb, rows=512, columns=512, number_of_frames=8)
    settings.max_inflated_mb = 1
    assert web.get(f"{url}/frames/1", headers={"Accept": FRAMES}).status_code == 200
    deep = web.get(f"{url}/frames/8", headers={"Accept": FRAMES})
    assert deep.status_code == 500
    assert "inflates past the 1 MiB limit" in deep.json()["detail"]
    settings.max_inflated_mb = 512
    assert web.get(f"{url}/frames/8", headers={"Accept": FRAMES}).status_code == 200
