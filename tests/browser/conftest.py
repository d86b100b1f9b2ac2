"""Fixtures for browser tests: the whole app (DICOMweb, auth, REST, OHIF) under uvicorn on a
loopback port, with a CT series stored, and headless Chromium driven by Playwright.

Playwright drives Debian's Chromium (`apt-get install chromium`); it never downloads a
browser of its own. Screenshots go to test-artifacts/ at the repository root.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from playwright.sync_api import Browser, sync_playwright
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from noctis.api.app import create_app
from noctis.api.viewer import default_viewer_dir
from noctis.core.facilities import DEFAULT_FACILITY
from noctis.core.ingest import FacilityRef, IngestError
from noctis.core.runtime import Runtime
from noctis.index.models import Facility
from support.archive import embedded_settings, open_runtime
from support.dicomdata import retired_us_sample, sample_dirs, transfer_syntax_samples
from support.incoming import ingest_file
from support.web import create_user, running

CHROMIUM = Path(os.environ.get("NOCTIS_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass(frozen=True)
class CtStudy:
    study_uid: str
    series_uid: str
    patient_name: str
    patient_id: str
    slices: int


@dataclass(frozen=True)
class LiveArchive:
    base_url: str
    app: FastAPI
    data_dir: Path
    username: str
    password: str
    study: CtStudy
    sample_studies: int  # studies of the public test files besides the CT


def phantom_slice(index: int, size: int = 256) -> np.ndarray:
    """Hounsfield units of an elliptic body with a bone ring and two organs; varies per slice."""
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    hu = np.full((size, size), -1000.0)
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 < 1
    hu[body] = 30
    ring = body & ((x / 0.75) ** 2 + (y / 0.55) ** 2 > 1)
    hu[ring] = 900
    shift = 0.1 * np.sin(index / 3)
    hu[((x + 0.35) / 0.2) ** 2 + ((y - shift) / 0.25) ** 2 < 1] = 60
    hu[((x - 0.35) / 0.18) ** 2 + ((y + shift) / 0.22) ** 2 < 1] = -800  # a lung
    return hu


def write_ct_series(directory: Path, slices: int = 12) -> tuple[CtStudy, list[Path]]:
    study = CtStudy(generate_uid(), generate_uid(), "Browser^Test", "BRW001", slices)
    paths = []
    for i in range(slices):
        stored = (phantom_slice(i) + 1024).astype(np.uint16)  # slope 1, intercept -1024
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = study.study_uid
        ds.SeriesInstanceUID = study.series_uid
        ds.FrameOfReferenceUID = study.series_uid[:-1] + "9"
        ds.PatientName = study.patient_name
        ds.PatientID = study.patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyDate = "20240102"
        ds.StudyTime = "101500"
        ds.StudyDescription = "CT phantom for the viewer test"
        ds.AccessionNumber = "ACC-BRW-1"
        ds.StudyID = "1"
        ds.Modality = "CT"
        ds.SeriesNumber = 1
        ds.SeriesDescription = "Axial phantom"
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [-128.0, -128.0, -2.5 * i]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceThickness = 2.5
        ds.PixelSpacing = [1.0, 1.0]
        ds.Rows, ds.Columns = stored.shape
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ds.PixelData = stored.tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = directory / f"ct-{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return study, paths


def store_public_samples(runtime: Runtime, ref: FacilityRef, workdir: Path) -> int:
    """Store what the archive accepts of pydicom's own test files (what a newcomer's
    ``noctis upload`` of them stores) and of the conformance set the suite uses (a real file
    per transfer syntax, and the retired US class); the number of studies they make.

    Odd files on purpose: the study list must show every study the archive accepted."""
    workdir.mkdir()
    sources = sorted(p for p in sample_dirs()[0].iterdir() if p.is_file())
    sources += [*transfer_syntax_samples(workdir / "conformance").values(), retired_us_sample()]
    studies = set()
    for index, source in enumerate(sources):
        copy = workdir / f"{index:04d}-{source.name}"  # the store links what it ingests
        shutil.copyfile(source, copy)
        try:
            result = ingest_file(runtime, ref, copy)
        except IngestError:
            continue  # not DICOM, or refused: not in the study list either
        studies.add(result.header.study_instance_uid)
    return len(studies)


@pytest.fixture(scope="module")
def live_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveArchive]:
    viewer_dir = default_viewer_dir()
    if not (viewer_dir / "index.html").is_file():
        pytest.fail(f"OHIF is not fetched into {viewer_dir}: run scripts/fetch-viewer.sh")
    root = tmp_path_factory.mktemp("browser")
    runtime: Runtime = open_runtime(embedded_settings(root), default_facility=True)
    study, paths = write_ct_series(root)
    with runtime.sessions() as session:
        facility = session.query(Facility).filter_by(name=DEFAULT_FACILITY).one()
        ref = FacilityRef(facility.id, facility.name)
    for path in paths:
        ingest_file(runtime, ref, path)
    sample_studies = store_public_samples(runtime, ref, root / "samples")
    password = create_user(runtime, "dr.house", "radiologist", [DEFAULT_FACILITY])
    app = create_app(runtime.settings, runtime)
    try:
        with running(app) as base_url:
            yield LiveArchive(base_url, app, root, "dr.house", password, study, sample_studies)
    finally:
        runtime.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: apt-get install chromium (scripts/bootstrap.sh --test)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
