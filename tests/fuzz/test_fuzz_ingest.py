"""Fuzzing what reads untrusted bytes: the header scanner, the structural validator and the
STOW multipart parser, with thousands of mutated inputs (hypothesis, bounded in time).

Each must answer every input with a result or its documented error (scanner: None, validator:
MalformedDicom, multipart: MultipartError): never another exception, never a hang (each
example has a deadline), never memory growing with what the input declares (the process's
RSS over a whole run stays within a bound; inputs declare lengths up to 4 GiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from noctis.api.dicomweb.multipart import MultipartError, spool_parts
from noctis.dicom.header import MalformedDicom, parse_instance_header, read_checked_header
from noctis.dicom.header_scan import scan_header
from support.damaged import encapsulated_ct, part10
from support.dicomdata import small_ct
from support.memory import PeakRss

EXAMPLES = 1000
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=1000,  # ms per example: a hang fails, a slow shared machine does not
    database=None,  # nothing written to the work tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MEMORY_BOUND = 64 << 20  # RSS growth over a whole run
INFLATE_CAP = 8 << 20


def _nested(syntax: str | None = None) -> bytes:
    inner = Dataset()
    inner.CodeValue = "T-D0050"
    outer = Dataset()
    outer.ConceptNameCodeSequence = Sequence([inner])
    ds = small_ct(AnatomicRegionSequence=Sequence([outer, outer]))
    if syntax:
        ds.file_meta.TransferSyntaxUID = syntax
    return part10(ds)


def _deflated() -> bytes:
    data = part10(small_ct())
    start = 132 + 12 + int.from_bytes(data[140:144], "little")
    meta = data[:start].replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.1.99")
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = deflater.compress(data[start:]) + deflater.flush()
    # the syntax UID grew by 2 bytes: fix the File Meta group length and the element's length
    meta = bytearray(meta)
    at = meta.index(b"1.2.840.10008.1.2.1.99")
    meta[at - 2 : at] = (22).to_bytes(2, "little")
    meta[140:144] = (int.from_bytes(meta[140:144], "little") + 2).to_bytes(4, "little")
    return bytes(meta) + body


SEEDS = [
    part10(small_ct()),
    _nested(),
    _nested(ImplicitVRLittleEndian),
    _nested(ExplicitVRBigEndian),
    part10(encapsulated_ct(frames=2, fragments=2)),
    _deflated(),
]
INTERESTING_LENGTHS = [0, 1, 2, 3, 4, 8, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with a few mutations: bit flips, 16/32-bit lengths overwritten with interesting
    values, bytes deleted, inserted or duplicated, a cut."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        kind = draw(st.sampled_from(["flip", "length16", "length32", "delete", "insert", "copy"]))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "length16":
            value = draw(st.sampled_from(INTERESTING_LENGTHS)) & 0xFFFF
            data[at : at + 2] = value.to_bytes(2, "little")
        elif kind == "length32":
            data[at : at + 4] = draw(st.sampled_from(INTERESTING_LENGTHS)).to_bytes(4, "little")
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        else:
            size = draw(st.integers(1, 256))
            data[at:at] = data[at : at + size]
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


def _bounded(run: Callable[[], None], examples: list[object]) -> None:
    """Run a hypothesis test; this process's RSS must not grow past MEMORY_BOUND meanwhile
    (sampled every 5 ms: tracemalloc would double the run's time). ``examples`` is what the
    test appended to, once per input: all of them ran."""
    with PeakRss() as rss:
        run()
    assert rss.growth < MEMORY_BOUND, f"RSS grew by {rss.growth >> 20} MiB"
    assert len(examples) >= EXAMPLES


def test_the_seeds_are_accepted() -> None:
    for seed in SEEDS:
        assert read_checked_header(io.BytesIO(seed)).number_of_frames in (None, 2)


def test_the_validator_refuses_or_accepts_every_input() -> None:
    examples: list[object] = []

    @FUZZ
    @given(mutated(SEEDS))
    def check(data: bytes) -> None:
        examples.append(None)
        try:
            header = read_checked_header(io.BytesIO(data), max_inflated=INFLATE_CAP)
        except MalformedDicom:
            return
        # Accepted: what the index is told must be consistent with the bytes.
        assert header.sop_instance_uid and header.study_instance_uid

    _bounded(check, examples)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_header_scanner_scans_or_declines_every_input() -> None:
    examples: list[object] = []

    @FUZZ
    @given(mutated(SEEDS))
    def check(data: bytes) -> None:
        examples.append(None)
        scanned = scan_header(io.BytesIO(data))  # None: left to pydicom, never an exception
        if scanned is not None and scanned.pixel_data_offset is not None:
            assert 0 < scanned.pixel_data_offset < len(data)
        with contextlib.suppress(MalformedDicom):
            parse_instance_header(io.BytesIO(data))

    _bounded(check, examples)


async def _chunks(body: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    at = 0
    for size in sizes:
        if at >= len(body):
            break
        yield body[at : at + size]
        at += size
    if at < len(body):
        yield body[at:]


def _multipart(parts: list[bytes]) -> bytes:
    head = b"--bound\r\nContent-Type: application/dicom\r\n\r\n"
    return b"".join(head + part + b"\r\n" for part in parts) + b"--bound--\r\n"


MULTIPART_SEEDS = [
    _multipart([b"DICM" * 10, b"x" * 100]),
    _multipart([b""]),
    _multipart([b"\r\n--bound" + b"y" * 20, b"--bound-" * 3]),
    b"preamble\r\n" + _multipart([b"a"]) + b"epilogue",
]


def test_the_multipart_parser_parses_or_refuses_every_body(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()  # one for all examples: a new one per run costs more
    examples: list[object] = []

    @FUZZ
    @given(mutated(MULTIPART_SEEDS), st.lists(st.integers(1, 64), max_size=20))
    def check(body: bytes, sizes: list[int]) -> None:
        examples.append(None)
        directory = tmp_path / "spool"
        try:
            parts = loop.run_until_complete(spool_parts(_chunks(body, sizes), "bound", directory))
        except MultipartError:
            assert not list(directory.glob("*")), "a refused body left files behind"
            return
        assert sum(part.size for part in parts) <= len(body)
        for part in parts:
            assert part.path.stat().st_size == part.size
            part.path.unlink()

    try:
        _bounded(check, examples)
    finally:
        loop.close()
