"""Ingest's checks (`noctis.dicom.header.read_checked_header`): the structural walk, pixel data
against the header, UIDs, bounded inflation. Real files must pass and give the header they
always gave; damaged ones are refused with a MalformedDicom that says what is wrong.
"""

from __future__ import annotations

import io
import struct
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRBigEndian, ImplicitVRLittleEndian

from noctis.dicom import sources
from noctis.dicom.fragments import MAX_FRAGMENTS
from noctis.dicom.header import (
    InstanceHeader,
    MalformedDicom,
    parse_instance_header,
    read_checked_header,
)
from noctis.dicom.structure import MAX_CAPTURED, MAX_ELEMENTS, walk_part10
from noctis.dicom.uids import uid_problem
from support.damaged import damaged_instances, encapsulated_ct, part10, write_deflated_bomb
from support.dicomdata import (
    generate_ct_series,
    retired_us_sample,
    sample_dirs,
    small_ct,
    transfer_syntax_samples,
)

# pydicom's test files that are damaged on purpose (their names say so), and why we refuse them.
DAMAGED_ON_PURPOSE = {
    "MR_truncated.dcm": "Pixel Data truncated",
    "rtplan_truncated.dcm": "(300A,012C) runs past the end of the data set",
    "emri_small_jpeg_2k_lossless_too_short.dcm": "Pixel Data ends before its sequence delimiter",
    "badVR.dcm": "NumberOfFrames '1A' is not an integer",
    # its SOP Instance UID is 64 hex digits: no DICOMweb path could name it
    "bad_sequence.dcm": "invalid SOPInstanceUID: not only digits and dots",
    # JPEG Baseline (explicit VR) in its File Meta, an implicit VR data set: pydicom guesses
    "SC_rgb_jpeg.dcm": "data set is not in the explicit VR its transfer syntax says",
}


def _sample_files() -> list[Path]:
    return sorted(p for d in sample_dirs() for p in d.rglob("*") if p.is_file())


def _accepted_before(path: Path) -> InstanceHeader | None:
    try:
        return parse_instance_header(path)
    except MalformedDicom:
        return None


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_every_test_file_accepted_before_passes_with_the_same_header() -> None:
    refused: dict[str, str] = {}
    checked = 0
    for path in _sample_files():
        before = _accepted_before(path)
        if before is None:
            continue  # not an instance ingest ever accepted (no UIDs, not Part 10, ...)
        checked += 1
        try:
            assert read_checked_header(path) == before, path.name
        except MalformedDicom as exc:
            refused[path.name] = str(exc)
    assert checked >= 200  # pydicom's and pydicom-data's files
    assert refused.keys() == DAMAGED_ON_PURPOSE.keys()
    for name, message in refused.items():
        assert DAMAGED_ON_PURPOSE[name] in message


def _verdict(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            walk_part10(handle)
    except MalformedDicom as exc:
        return str(exc)
    return "accepted"


def test_the_verdict_does_not_depend_on_read_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The walk reads a file in windows (8 KB, 512 B after a skipped value) and inflates a
    deflated one in pieces: whatever those sizes, every file gets the same verdict. With
    512-byte reads, 25 of pydicom's files were refused (e.g. CT_small.dcm), and with 8 KB
    ones waveform_ecg.dcm: a window reused after a sequence was read from the wrong byte."""
    files = _sample_files()
    whole = max(path.stat().st_size for path in files)
    verdicts: dict[str, set[str]] = {}
    for size in (1, 7, 512, 8 << 10, whole):
        monkeypatch.setattr(sources, "_READ", size)
        monkeypatch.setattr(sources, "_READ_AFTER_SKIP", size)
        monkeypatch.setattr(sources, "_INFLATE_IN", size)
        for path in files:
            verdicts.setdefault(path.name, set()).add(_verdict(path))
    assert {name: found for name, found in verdicts.items() if len(found) > 1} == {}
    assert verdicts["waveform_ecg.dcm"] == verdicts["CT_small.dcm"] == {"accepted"}
    assert verdicts["image_dfl.dcm"] == {"accepted"}  # deflated


def test_the_encoding_is_the_transfer_syntax_s_never_a_guess() -> None:
    """An implicit VR item whose first element is 0x5344 bytes long: read as explicit VR,
    its length field spells "DS". The data set is what its transfer syntax says it is."""
    item = Dataset()
    item.CodeMeaning = "x" * 0x5344
    ds = small_ct(AnatomicRegionSequence=Sequence([item]))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    data = part10(ds)
    assert struct.pack("<HHL", 0x0008, 0x0104, 0x5344)[4:6] == b"DS"
    assert read_checked_header(io.BytesIO(data)).sop_instance_uid == ds.SOPInstanceUID


def test_the_conformance_set_and_generated_series_pass(tmp_path: Path) -> None:
    files = [
        *transfer_syntax_samples(tmp_path / "samples").values(),  # a real file per syntax
        retired_us_sample(),
        *generate_ct_series(tmp_path / "ct", slices=2, size=64),
    ]
    for path in files:
        assert read_checked_header(path) == parse_instance_header(path), path.name


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", damaged_instances(), ids=lambda case: case.name)
def test_damaged_instances_are_refused_with_what_is_wrong(case) -> None:
    with pytest.raises(MalformedDicom) as refused:
        read_checked_header(io.BytesIO(case.data))
    assert case.comment in str(refused.value)
    assert len(str(refused.value)) <= 64  # fits a DIMSE ErrorComment whole


def _data_set_start(data: bytes) -> int:
    # the File Meta group starts with its group length (UL, explicit VR little endian)
    return 132 + 12 + int.from_bytes(data[140:144], "little")


def _top_level_boundaries(data: bytes) -> set[int]:
    """Offsets in ``data`` where a top-level element ends (a cut there leaves a whole, shorter
    data set: nothing can tell it was cut), as pydicom reads them."""
    syntax = UID(dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID)
    handle = io.BytesIO(data)
    handle.seek(_data_set_start(data))
    ends = set()
    for _ in data_element_generator(handle, syntax.is_implicit_VR, syntax.is_little_endian):
        ends.add(handle.tell())
    return ends


def _nested(**encoding: object) -> bytes:
    """An instance with nested sequences: an outer one of undefined length whose items hold a
    sequence of defined length."""
    inner = Dataset()
    inner.CodeValue = "T-D0050"
    inner.CodingSchemeDesignator = "SRT"
    outer = Dataset()
    outer.CodeMeaning = "Body"
    outer.ConceptNameCodeSequence = Sequence([inner, inner])
    ds = small_ct(AnatomicRegionSequence=Sequence([outer, outer]))
    for keyword, value in encoding.items():
        setattr(ds.file_meta, keyword, value)
    return part10(ds)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(part10(small_ct()), id="explicit-little"),
        pytest.param(_nested(), id="nested-explicit"),
        pytest.param(_nested(TransferSyntaxUID=ImplicitVRLittleEndian), id="nested-implicit"),
        pytest.param(_nested(TransferSyntaxUID=ExplicitVRBigEndian), id="nested-big-endian"),
        pytest.param(part10(encapsulated_ct(frames=2, fragments=3)), id="encapsulated"),
    ],
)
def test_every_cut_is_refused_unless_it_falls_between_elements(data: bytes) -> None:
    assert read_checked_header(io.BytesIO(data))  # whole: accepted
    boundaries = _top_level_boundaries(data)
    assert len(boundaries) > 10
    for cut in range(_data_set_start(data) + 1, len(data)):
        if cut in boundaries:
            continue
        with pytest.raises(MalformedDicom):
            read_checked_header(io.BytesIO(data[:cut]))


def _with_sequence_lengths(defined: bool) -> bytes:
    ds = small_ct()
    item = Dataset()
    item.CodeValue = "1"
    ds.AnatomicRegionSequence = Sequence([item])
    ds["AnatomicRegionSequence"].is_undefined_length = not defined
    return part10(ds)


def test_an_item_longer_than_its_sequence_is_refused() -> None:
    data = bytearray(_with_sequence_lengths(defined=True))
    at = data.index(b"\xfe\xff\x00\xe0")  # the item; its length follows
    data[at + 4 : at + 8] = (100).to_bytes(4, "little")
    with pytest.raises(MalformedDicom, match="runs past the end of its sequence"):
        read_checked_header(io.BytesIO(bytes(data)))


def test_a_sequence_without_its_delimiter_is_refused() -> None:
    data = _with_sequence_lengths(defined=False)
    at = data.index(b"\xfe\xff\xdd\xe0")  # sequence delimitation item
    damaged = data[:at] + data[at + 8 :]
    with pytest.raises(MalformedDicom, match="where a sequence item was expected"):
        read_checked_header(io.BytesIO(damaged))


def test_nesting_beyond_the_bound_is_refused() -> None:
    ds = small_ct()
    innermost = ds
    for _ in range(40):
        item = Dataset()
        innermost.AnatomicRegionSequence = Sequence([item])
        innermost = item
    with pytest.raises(MalformedDicom, match="nested deeper than"):
        read_checked_header(io.BytesIO(part10(ds)))


def test_a_basic_offset_table_must_match_the_frames() -> None:
    ds = encapsulated_ct(frames=3, fragments=3)
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate([b"\xff\xd8ab\xff\xd9"] * 3, has_bot=True)
    assert read_checked_header(io.BytesIO(part10(ds))).number_of_frames == 3
    ds.NumberOfFrames = 2
    with pytest.raises(MalformedDicom, match="Basic Offset Table has 3 entries for 2 frames"):
        read_checked_header(io.BytesIO(part10(ds)))


@pytest.mark.parametrize(
    ("uid", "problem"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", None),
        ("0.0", None),
        ("1." + "9" * 62, None),
        ("1." + "9" * 63, "65 characters, more than 64"),
        ("", "empty"),
        ("abc.def", "not only digits and dots"),
        ("1.2/3", "not only digits and dots"),
        ("1.2.3 ", "not only digits and dots"),
        ("1..2", "an empty component"),
        ("1.2.", "an empty component"),
        ("1.02", "a component with a leading zero"),
        ("00.1", "a component with a leading zero"),
    ],
)
def test_uid_syntax(uid: str, problem: str | None) -> None:
    assert uid_problem(uid) == problem


def test_a_deflated_data_set_is_inflated_as_a_stream_under_its_cap(tmp_path: Path) -> None:
    bomb = write_deflated_bomb(tmp_path / "bomb.dcm", 300 << 20)
    assert bomb.stat().st_size < 400 << 10
    tracemalloc.start()
    try:
        with pytest.raises(MalformedDicom, match="inflated data set exceeds the 100 MiB limit"):
            read_checked_header(bomb, max_inflated=100 << 20)
        header = read_checked_header(bomb)  # under the default cap (512 MiB): whole, accepted
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert header.number_of_frames == 600
    assert peak < 8 << 20  # never the inflated data set, only pieces of it


def test_a_damaged_deflated_stream_is_refused(tmp_path: Path) -> None:
    bomb = write_deflated_bomb(tmp_path / "bomb.dcm", 1 << 20).read_bytes()
    with pytest.raises(MalformedDicom, match="ends inside its compressed stream"):
        read_checked_header(io.BytesIO(bomb[:-100]))
    garbled = bomb[:400] + bytes(b ^ 0x55 for b in bomb[400:600]) + bomb[600:]
    with pytest.raises(MalformedDicom):
        read_checked_header(io.BytesIO(garbled))


class _CountingReader(io.FileIO):
    """A file that counts the bytes read from it."""

    bytes_read = 0

    def readinto(self, buffer) -> int:  # type: ignore[override]
        count = super().readinto(buffer) or 0
        self.bytes_read += count
        return count


def test_pixel_bytes_are_seeked_over_not_read(tmp_path: Path) -> None:
    (ct,) = generate_ct_series(tmp_path, slices=1, size=512)
    with _CountingReader(ct) as handle:
        read_checked_header(handle)  # type: ignore[arg-type]
        assert ct.stat().st_size > 500_000
        assert handle.bytes_read < 40_000  # the header (read twice at most), not the pixels


def test_an_unnamed_or_in_memory_file_gives_the_same_answer(tmp_path: Path) -> None:
    (ct,) = generate_ct_series(tmp_path, slices=1, size=64)
    data = ct.read_bytes()
    with tempfile.SpooledTemporaryFile(max_size=1 << 20) as spooled:
        spooled.write(data)
        assert read_checked_header(spooled) == read_checked_header(ct)
    damaged = damaged_instances()[0].data
    with tempfile.TemporaryFile() as unnamed:
        unnamed.write(damaged)
        with pytest.raises(MalformedDicom, match="Pixel Data truncated"):
            read_checked_header(unnamed)


def test_a_data_set_of_a_million_empty_elements_is_refused() -> None:
    """Each element costs the walk ~1.7 us: an input of empty elements (8 MB here, 14 KB
    deflated) is refused past MAX_ELEMENTS instead of holding a thread as long as it likes."""
    data = part10(small_ct())
    pixels = data.index(b"\xe0\x7f\x10\x00")
    empty = struct.pack("<HH2sH", 0x0009, 0x1011, b"SH", 0)
    sequence = (
        struct.pack("<HH2sHL", 0x0009, 0x1010, b"SQ", 0, 0xFFFFFFFF)
        + struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
        + empty * (MAX_ELEMENTS + 10)
        + struct.pack("<HHLHHL", 0xFFFE, 0xE00D, 0, 0xFFFE, 0xE0DD, 0)
    )
    with pytest.raises(MalformedDicom, match="more than 1000000 elements"):
        read_checked_header(io.BytesIO(data[:pixels] + sequence + data[pixels:]))


def test_an_oversized_header_value_is_refused_in_implicit_vr_too() -> None:
    """Implicit VR lengths are 4 bytes: a PatientName as long as the file must not be kept
    (and then indexed) whole."""
    ds = small_ct(PatientName="A" * (MAX_CAPTURED + 2))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    with pytest.raises(MalformedDicom):
        read_checked_header(io.BytesIO(part10(ds)))


def test_more_fragments_than_the_read_side_serves_are_refused() -> None:
    ds = encapsulated_ct(frames=1, fragments=MAX_FRAGMENTS + 1)
    with pytest.raises(MalformedDicom, match=f"more than {MAX_FRAGMENTS} fragments"):
        read_checked_header(io.BytesIO(part10(ds)))
