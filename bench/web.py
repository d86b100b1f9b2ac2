"""DICOMweb benchmark: the requests a viewer makes, timed against each archive's DICOMweb root.

Each request is sent once to warm up, then `runs` times on one keep-alive connection (httpx);
the figures are the median and 95th percentile of the wall time to the last byte of the body.
Every answer is checked (number of studies, of instances, frame size, JPEG signature), so a
server that answers fast with the wrong thing fails instead of winning.
"""

from __future__ import annotations

import httpx

from bench.data import Dataset
from bench.target import Target
from bench.timing import Timing, measure

FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
# Uncompressed bodies by default: on loopback, gzip only adds the server's compression time
# (Orthanc gzips a 512 KB frame in ~50 ms when asked); `--gzip` asks like a browser does.
IDENTITY = {"Accept-Encoding": "identity"}
BROWSER = {"Accept-Encoding": "gzip, deflate"}
# The wildcard goes in the URL as is: a viewer (encodeURIComponent) does not escape "*", and
# Orthanc 1.10 matches "A%2A" literally, finding nothing.
QIDO_PATH = "/studies?PatientName=A*"
REQUESTS = ("QIDO studies PatientName=A*", "WADO-RS series metadata", "frame 1", "rendered JPEG")


def bench_dicomweb(
    target: Target, dataset: Dataset, *, expected_studies: int, runs: int, gzip: bool = False
) -> list[Timing]:
    ct = dataset.ct
    sop = dataset.frame_instance()
    series = f"/studies/{ct.study_uid}/series/{ct.series_uid}"
    frame_bytes = ct.bytes // ct.count // 4  # a frame holds most of a slice's bytes
    try:
        headers = {**(BROWSER if gzip else IDENTITY), **target.http_headers()}
    except Exception as exc:
        return [
            Timing(target=target.name, name=name, error=f"no credentials: {exc}")
            for name in REQUESTS
        ]
    with httpx.Client(base_url=target.dicomweb_root(), headers=headers, timeout=120) as client:

        def get(path: str, accept: str) -> httpx.Response:
            response = client.get(path, headers={"Accept": accept})
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
            return response

        def qido() -> str:
            studies = get(QIDO_PATH, "application/dicom+json").json()
            if len(studies) != expected_studies:
                raise AssertionError(f"{len(studies)} studies, expected {expected_studies}")
            return f"{len(studies)} studies"

        def metadata() -> str:
            instances = get(f"{series}/metadata", "application/dicom+json").json()
            if len(instances) != ct.count:
                raise AssertionError(f"{len(instances)} instances, expected {ct.count}")
            return f"{len(instances)} instances"

        def frame() -> str:
            response = get(f"{series}/instances/{sop}/frames/1", FRAME_ACCEPT)
            kind = response.headers.get("content-type", "")
            if not kind.startswith("multipart/related") or len(response.content) < frame_bytes:
                raise AssertionError(f"{len(response.content)} bytes of {kind!r}")
            return "multipart frame"

        def rendered() -> str:
            response = get(f"{series}/instances/{sop}/rendered", "image/jpeg")
            if not response.content.startswith(b"\xff\xd8"):
                raise AssertionError(f"not a JPEG: {response.content[:8]!r}")
            return "JPEG"

        return [
            measure(target.name, name, runs, once)
            for name, once in zip(REQUESTS, (qido, metadata, frame, rendered), strict=True)
        ]
