"""The benchmark's data: a CT series (and copies of it with new UIDs) and many small studies.

Generated once and cached by parameters (default `~/.cache/noctis-bench`), because every run
sends the same bytes. UIDs are derived from fixed seeds, so two runs send identical data.

- CT: `slices` 512x512 16-bit slices of a synthetic chest phantom with realistic CT headers.
  `tests/support/dicomdata.py`'s `generate_ct_series` is used when it exists; otherwise the
  generator below. Copies of it (same pixels, new study/series/instance UIDs) are what the
  parallel cases send, so no case ever re-sends an instance a target already holds.
- Small: `count` 64x64 16-bit CT/MR/CR images, one study each, two studies per patient;
  about one patient name in ten starts with "A" (the QIDO and C-FIND wildcard).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.filereader import dcmread
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

from bench.procs import test_support

GENERATOR_VERSION = "1"
REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_GENERATOR = REPO_ROOT / "tests" / "support" / "dicomdata.py"
DEFAULT_CACHE = Path.home() / ".cache" / "noctis-bench"

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
SMALL_KINDS = (("CT", CT_IMAGE_STORAGE), ("MR", MR_IMAGE_STORAGE), ("CR", CR_IMAGE_STORAGE))

# 4 of 40 surnames start with "A": the wildcard matches about a tenth of the studies.
# fmt: off
SURNAMES = (
    "ADAMS", "BROWN", "CLARK", "DAVIS", "EVANS", "FISHER", "GARCIA", "HUGHES", "IBARRA", "JONES",
    "KING", "LEWIS", "MARTIN", "NELSON", "OWEN", "PARKER", "QUINN", "ROBERTS", "SMITH", "TAYLOR",
    "UNDERWOOD", "VEGA", "WALKER", "XU", "YOUNG", "ZHANG", "ALLEN", "BAKER", "COOPER", "DIAZ",
    "ELLIS", "FOSTER", "GRAY", "ANDERSON", "HILL", "MORRIS", "PEREZ", "ALVAREZ", "REED", "STONE",
)
GIVEN_NAMES = (
    "JOHN", "MARY", "AHMED", "SOFIA", "LI", "ANNA", "PIERRE", "KENJI", "FATIMA", "OLGA", "JAMES",
)
# fmt: on


@dataclass
class FileSet:
    """Files that one benchmark case sends, with what the receiver must end up holding."""

    name: str
    directory: Path
    files: list[Path]
    bytes: int
    studies: int
    wildcard_studies: int = 0  # studies whose PatientName matches "A*"
    study_uid: str = ""  # for a single series: its study, series and instance UIDs
    series_uid: str = ""
    sop_uids: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.files)


@dataclass
class Dataset:
    ct: FileSet  # the series every target receives (and the web benchmark reads)
    ct_copies: list[FileSet]  # same series, new UIDs: one per parallel case
    small: FileSet
    generator: str  # "tests/support/dicomdata.py" or "bench/data.py"
    directory: Path

    def frame_instance(self) -> str:
        """The CT instance the frame and rendered benchmarks fetch: the middle slice."""
        return self.ct.sop_uids[len(self.ct.sop_uids) // 2]


def uid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=["noctis-bench", *map(str, parts)]))


def prepare(cache_dir: Path, *, slices: int, size: int, small_count: int, copies: int) -> Dataset:
    """Generate (or reuse from the cache) the CT series, its copies and the small studies."""
    generator, generate_ct = _ct_generator()
    key = hashlib.sha256(
        f"{GENERATOR_VERSION}|{generator}|{_shared_digest()}|{slices}|{size}|{small_count}".encode()
    ).hexdigest()[:12]
    root = cache_dir / f"data-{slices}x{size}-{small_count}-{key}"
    manifest = root / "manifest.json"
    if not manifest.is_file():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        ct_dir = root / "ct-0"
        generate_ct(ct_dir, slices, size)
        _write_small_studies(root / "small", small_count)
        manifest.write_text(json.dumps({"generator": generator}))
    for index in range(1, copies + 1):  # copies are cheap to make and made on demand
        target = root / f"ct-{index}"
        if not (target / ".complete").is_file():
            _copy_with_new_uids(root / "ct-0", target, index)
    ct = _describe(root / "ct-0", "ct")
    return Dataset(
        ct=ct,
        ct_copies=[_describe(root / f"ct-{i}", f"ct-copy-{i}") for i in range(1, copies + 1)],
        small=_describe(root / "small", "small"),
        generator=json.loads(manifest.read_text())["generator"],
        directory=root,
    )


def summary(dataset: Dataset) -> dict[str, object]:
    """What the results JSON records about the data."""

    def one(fs: FileSet) -> dict[str, object]:
        data = asdict(fs)
        data.pop("files")
        data.pop("sop_uids")
        data["directory"] = str(fs.directory)
        data["count"] = fs.count
        return data

    return {
        "generator": dataset.generator,
        "directory": str(dataset.directory),
        "ct": one(dataset.ct),
        "ct_copies": [one(c) for c in dataset.ct_copies],
        "small": one(dataset.small),
    }


def warm_page_cache(dataset: Dataset) -> None:
    """Read every file once so the first target does not pay for cold disk reads."""
    for fs in (dataset.ct, *dataset.ct_copies, dataset.small):
        for path in fs.files:
            with path.open("rb") as handle:
                while handle.read(1 << 20):
                    pass


# --- the CT generator --------------------------------------------------------------------


def _ct_generator() -> tuple[str, Callable[[Path, int, int], None]]:
    if SHARED_GENERATOR.is_file():
        test_support()
        try:
            module = importlib.import_module("support.dicomdata")
            shared = module.generate_ct_series
        except (ImportError, AttributeError):
            pass
        else:

            def generate(directory: Path, slices: int, size: int) -> None:
                directory.mkdir(parents=True, exist_ok=True)
                shared(directory, slices=slices, size=size)

            return "tests/support/dicomdata.py", generate
    return "bench/data.py", write_ct_series


def _shared_digest() -> str:
    if not SHARED_GENERATOR.is_file():
        return ""
    return hashlib.sha256(SHARED_GENERATOR.read_bytes()).hexdigest()


def write_ct_series(directory: Path, slices: int, size: int) -> None:
    """A chest CT: `slices` axial slices of `size`x`size`, 16-bit, 1 mm apart."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    study_uid, series_uid, frame_uid = uid("ct", "study"), uid("ct", "series"), uid("ct", "for")
    y, x = np.ogrid[-1.0 : 1.0 : size * 1j, -1.0 : 1.0 : size * 1j]
    body = (x / 0.85) ** 2 + (y / 0.62) ** 2 <= 1.0
    spine = (x / 0.09) ** 2 + ((y - 0.42) / 0.09) ** 2 <= 1.0
    for index in range(slices):
        z = index / max(slices - 1, 1)  # 0 at the neck, 1 at the abdomen
        lung_size = 0.28 * np.sin(np.pi * min(z * 1.3, 1.0)) + 0.02
        lungs = (((np.abs(x) - 0.38) / lung_size) ** 2 + (y / (lung_size * 1.6)) ** 2) <= 1.0
        hu = np.full((size, size), -1000.0)
        hu[body] = 40.0
        hu[body & lungs] = -820.0
        hu[spine] = 700.0
        hu += rng.normal(0.0, 12.0, hu.shape)
        pixels = np.clip(hu + 1024.0, 0, 4095).astype(np.uint16)
        ds = _base_dataset(CT_IMAGE_STORAGE, uid("ct", "sop", index))
        _patient(ds, "CHEST^PHANTOM", "BENCH-CT-1", "19600101", "O")
        ds.StudyInstanceUID = study_uid
        ds.StudyDate, ds.StudyTime = "20240312", "101500"
        ds.StudyID, ds.AccessionNumber = "1", "ACC-CT-0001"
        ds.StudyDescription = "CT CHEST ABDOMEN PELVIS W CONTRAST"
        ds.ReferringPhysicianName = "WATSON^JOHN"
        ds.SeriesInstanceUID, ds.SeriesNumber = series_uid, 3
        ds.SeriesDescription, ds.Modality = "AX 1.0 SOFT TISSUE", "CT"
        ds.SeriesDate, ds.SeriesTime = "20240312", "101732"
        ds.BodyPartExamined, ds.PatientPosition = "CHEST", "HFS"
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
        ds.Manufacturer, ds.ManufacturerModelName = "NOCTIS BENCH", "PHANTOM 64"
        ds.InstitutionName, ds.StationName = "NOCTIS GENERAL HOSPITAL", "CT01"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.AcquisitionNumber, ds.InstanceNumber = 1, index + 1
        ds.ContentDate, ds.ContentTime = "20240312", f"1018{index % 60:02d}"
        ds.KVP, ds.XRayTubeCurrent, ds.ExposureTime = "120", 250, 500
        ds.ConvolutionKernel, ds.SliceThickness = "B31f", "1.0"
        ds.SpacingBetweenSlices = "1.0"
        ds.ImagePositionPatient = [-250.0, -250.0, -float(index)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SliceLocation = -float(index)
        ds.PixelSpacing = [round(500.0 / size, 4)] * 2
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        _pixels(ds, pixels, bits_stored=12)
        ds.save_as(directory / f"CT{index + 1:04d}.dcm", enforce_file_format=True)


def _write_small_studies(directory: Path, count: int) -> None:
    """`count` small single-image studies, two per patient, one image each."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    names = random.Random(3)
    first_day = date(2015, 1, 1)
    patient_names: dict[int, str] = {}
    for index in range(count):
        patient = index // 2
        if patient not in patient_names:
            patient_names[patient] = f"{names.choice(SURNAMES)}^{names.choice(GIVEN_NAMES)}"
        modality, sop_class = SMALL_KINDS[index % len(SMALL_KINDS)]
        ds = _base_dataset(sop_class, uid("small", "sop", index))
        birth = first_day - timedelta(days=7000 + patient * 13)
        _patient(
            ds,
            patient_names[patient],
            f"BENCH-{patient:06d}",
            birth.strftime("%Y%m%d"),
            "MF"[patient % 2],
        )
        day = (first_day + timedelta(days=index)).strftime("%Y%m%d")
        ds.StudyInstanceUID = uid("small", "study", index)
        ds.StudyDate, ds.StudyTime = day, f"{8 + index % 10:02d}{index % 60:02d}00"
        ds.StudyID, ds.AccessionNumber = str(index + 1), f"ACC-{index:07d}"
        ds.StudyDescription = f"{modality} ROUTINE"
        ds.ReferringPhysicianName = "HOUSE^GREGORY"
        ds.SeriesInstanceUID, ds.SeriesNumber = uid("small", "series", index), 1
        ds.SeriesDescription, ds.Modality = f"{modality} SERIES", modality
        ds.SeriesDate, ds.SeriesTime = day, ds.StudyTime
        ds.Manufacturer, ds.InstitutionName = "NOCTIS BENCH", "NOCTIS GENERAL HOSPITAL"
        ds.InstanceNumber = 1
        ds.ContentDate, ds.ContentTime = day, ds.StudyTime
        if modality != "CR":
            ds.FrameOfReferenceUID = uid("small", "for", index)
            ds.ImagePositionPatient = [0.0, 0.0, 0.0]
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ds.SliceThickness = "5.0"
        ds.PixelSpacing = ["0.5", "0.5"]
        pixels = rng.integers(0, 4096, size=(64, 64), dtype=np.uint16)
        _pixels(ds, pixels, bits_stored=12)
        ds.save_as(directory / f"S{index:05d}.dcm", enforce_file_format=True)
    (directory / "names.json").write_text(json.dumps(sorted(set(patient_names.values()))))


def _base_dataset(sop_class: str, sop_uid: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    return ds


def _patient(ds: FileDataset, name: str, patient_id: str, birth: str, sex: str) -> None:
    ds.PatientName, ds.PatientID = name, patient_id
    ds.PatientBirthDate, ds.PatientSex = birth, sex


def _pixels(ds: FileDataset, pixels: np.ndarray, *, bits_stored: int) -> None:
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"


# --- copies and descriptions -------------------------------------------------------------


def _copy_with_new_uids(source: Path, target: Path, copy: int) -> None:
    """The same images as a new study: new study, series, frame-of-reference and SOP UIDs."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    study_uid, series_uid = uid("copy", copy, "study"), uid("copy", copy, "series")
    frame_uid = uid("copy", copy, "for")
    for path in sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")):
        ds = dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        if "FrameOfReferenceUID" in ds:
            ds.FrameOfReferenceUID = frame_uid
        ds.SOPInstanceUID = uid("copy", copy, "sop", ds.SOPInstanceUID)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.AccessionNumber = f"ACC-COPY-{copy:04d}"
        ds.StudyID = str(1000 + copy)
        ds.save_as(target / path.name, enforce_file_format=True)
    (target / ".complete").write_text("")


def _describe(directory: Path, name: str) -> FileSet:
    files = sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix != ".json"
    )
    studies: set[str] = set()
    wildcard: set[str] = set()
    series: set[str] = set()
    sop_uids: list[tuple[int, str]] = []
    for path in files:
        ds = dcmread(
            path,
            stop_before_pixels=True,
            specific_tags=[
                "PatientName",
                "StudyInstanceUID",
                "SeriesInstanceUID",
                "SOPInstanceUID",
                "InstanceNumber",
            ],
        )
        studies.add(ds.StudyInstanceUID)
        # PN matching is case-insensitive in Orthanc's default and in our expectation
        if str(ds.get("PatientName", "")).upper().startswith("A"):
            wildcard.add(ds.StudyInstanceUID)
        series.add(ds.SeriesInstanceUID)
        sop_uids.append((int(ds.get("InstanceNumber") or 0), ds.SOPInstanceUID))
    single = len(series) == 1
    return FileSet(
        name=name,
        directory=directory,
        files=files,
        bytes=sum(p.stat().st_size for p in files),
        studies=len(studies),
        wildcard_studies=len(wildcard),
        study_uid=next(iter(studies)) if single else "",
        series_uid=next(iter(series)) if single else "",
        sop_uids=[sop for _, sop in sorted(sop_uids)] if single else [],
    )
