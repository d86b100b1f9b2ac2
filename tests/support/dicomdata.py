"""DICOM test data: real files for every transfer syntax, and a synthetic CT series.

Real files come from pydicom's bundled test files and PyPI ``pydicom-data`` (installed by the
test extra; read from the installed package, never downloaded). Between them they cover the
eleven transfer syntaxes a PACS meets: implicit and explicit VR little endian, explicit big
endian, deflate, JPEG baseline / extended / lossless SV1, JPEG-LS lossless and near-lossless,
JPEG 2000 lossless and lossy, RLE. The files chosen have distinct SOP Instance UIDs (many of
pydicom's files are one instance re-encoded), so all of them can live in one archive.
"""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import numpy as np
import pydicom
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import (
    JPEG2000,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

# transfer syntax -> a real file in it (file name in pydicom's or pydicom-data's test files)
TRANSFER_SYNTAX_FILES: dict[str, str] = {
    ImplicitVRLittleEndian: "MR_small_implicit.dcm",
    ExplicitVRLittleEndian: "CT_small.dcm",
    ExplicitVRBigEndian: "SC_rgb_small_odd_big_endian.dcm",
    DeflatedExplicitVRLittleEndian: "image_dfl.dcm",
    JPEGBaseline8Bit: "SC_rgb_jpeg_dcmtk.dcm",
    JPEGExtended12Bit: "JPGExtended.dcm",
    JPEGLosslessSV1: "SC_rgb_jpeg_gdcm.dcm",
    JPEGLSLossless: "emri_small_jpeg_ls_lossless.dcm",
    JPEGLSNearLossless: "JPEGLSNearLossless_08.dcm",
    JPEG2000Lossless: "693_J2KR.dcm",
    JPEG2000: "693_J2KI.dcm",
    RLELossless: "OBXXXX1A_rle.dcm",
}
# Ultrasound Image Storage (Retired), 1.2.840.10008.5.1.4.1.1.6: pydicom-data's color-pl.dcm
RETIRED_US_FILE = "color-pl.dcm"
RETIRED_US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6"
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID")


def sample_dirs() -> list[Path]:
    """pydicom's bundled test files and pydicom-data's files (if installed)."""
    dirs = [Path(pydicom.__file__).parent / "data" / "test_files"]
    try:
        import data_store  # PyPI pydicom-data
    except ImportError:
        pass
    else:
        dirs.append(Path(data_store.__file__).parent / "data")
    return dirs


def real_file(name: str) -> Path:
    for directory in sample_dirs():
        found = directory / name
        if found.is_file():
            return found
    raise FileNotFoundError(
        f"test file {name} not found in {', '.join(map(str, sample_dirs()))}; "
        "install the test extra (pip install -e '.[test]', which brings PyPI pydicom-data)"
    )


def transfer_syntax_samples(workdir: Path) -> dict[str, Path]:
    """transfer syntax UID -> a real file in it.

    Files are used where they are, except one lacking the Study/Series UIDs every archive
    needs (pydicom's JPEG-LS near-lossless samples have none): a copy with stable UIDs added,
    pixel data untouched, is written to ``workdir``.
    """
    samples: dict[str, Path] = {}
    for syntax, name in TRANSFER_SYNTAX_FILES.items():
        path = real_file(name)
        samples[syntax] = _with_required_uids(path, workdir)
    return samples


def retired_us_sample() -> Path:
    return real_file(RETIRED_US_FILE)


def _with_required_uids(path: Path, workdir: Path) -> Path:
    ds = dcmread(path, stop_before_pixels=True)
    if all(str(ds.get(keyword, "") or "").strip() for keyword in _REQUIRED_UIDS):
        return path
    ds = dcmread(path)
    for keyword in _REQUIRED_UIDS:
        if not str(ds.get(keyword, "") or "").strip():
            setattr(ds, keyword, generate_uid(entropy_srcs=[path.name, keyword]))
    ds.PatientID = ds.get("PatientID") or "NOCTIS-TEST"
    ds.PatientName = ds.get("PatientName") or "Test^Sample"
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / path.name
    ds.save_as(target, enforce_file_format=True)
    return target


def dataset_bytes(path: Path) -> bytes:
    """A Part 10 file's data set bytes, after the preamble and file meta."""
    data = path.read_bytes()
    return data[_data_set_offset(path) :]


def dataset_sha256(path: Path) -> str:
    return hashlib.sha256(dataset_bytes(path)).hexdigest()


def _data_set_offset(path: Path) -> int:
    with path.open("rb") as handle:
        read_file_meta_info(path)  # raises on a non-Part 10 file
        handle.seek(128 + 4)
        # group 2 starts with its group length (explicit VR little endian, UL)
        tag_and_vr = handle.read(8)
        if tag_and_vr[:4] != b"\x02\x00\x00\x00":
            raise ValueError(f"{path}: file meta has no group length")
        length = int.from_bytes(handle.read(4), "little")
        return 128 + 4 + 12 + length


def sop_instance_uid(path: Path) -> str:
    return str(read_file_meta_info(path).MediaStorageSOPInstanceUID)


def generate_ct_series(
    directory: Path,
    slices: int = 300,
    size: int = 512,
    *,
    patient_id: str = "CT-SERIES-1",
    patient_name: str = "Phantom^Body",
    study_instance_uid: str | None = None,
    study_date: str = "20240315",
    seed: int = 0,
) -> list[Path]:
    """Write a CT series like a scanner's (explicit VR little endian, 16-bit signed pixels).

    Headers carry what viewers and the index use (patient, study, series, geometry, rescale,
    windowing); pixels are a body-shaped phantom with noise that differs per slice. About a
    second for 300 slices of 512x512.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study_uid = study_instance_uid or generate_uid()
    series_uid = generate_uid()
    frame_uid = generate_uid()
    phantom = _phantom(size)
    noise = rng.integers(-20, 21, size=(8, size, size), dtype=np.int16)
    template = _ct_template(patient_id, patient_name, study_uid, series_uid, frame_uid, study_date)
    template.Rows = template.Columns = size
    files = []
    for index in range(slices):
        ds = template.copy()
        sop_uid = generate_uid()
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = index + 1
        z = -float(index) * 1.25
        ds.ImagePositionPatient = [-(size * 0.7) / 2, -(size * 0.7) / 2, z]
        ds.SliceLocation = z
        ds.AcquisitionNumber = 1
        pixels = phantom + noise[index % len(noise)] + np.int16(index % 50)
        ds.PixelData = pixels.tobytes()
        ds.file_meta = _meta(sop_uid)
        path = directory / f"CT{index + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def _phantom(size: int) -> np.ndarray:
    y, x = np.ogrid[:size, :size]
    centre = (size - 1) / 2
    body = ((x - centre) / (size * 0.42)) ** 2 + ((y - centre) / (size * 0.33)) ** 2 <= 1
    organ = ((x - centre * 0.8) / (size * 0.1)) ** 2 + ((y - centre) / (size * 0.12)) ** 2 <= 1
    image = np.full((size, size), -1000, dtype=np.int16)  # air, in HU
    image[body] = 40  # soft tissue
    image[organ] = 300  # contrast-filled
    return image + 1024  # stored values: rescale intercept -1024


def _ct_template(
    patient_id: str,
    patient_name: str,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    study_date: str,
) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "093000"
    ds.AccessionNumber = f"ACC{zlib.crc32(study_uid.encode()) % 10**8:08d}"
    ds.Modality = "CT"
    ds.Manufacturer = "Noctis Test Scanner"
    ds.InstitutionName = "Noctis General"
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.StudyDescription = "CT CHEST ABDOMEN PELVIS"
    ds.SeriesDescription = "Axial 1.25mm"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = 1.25
    ds.KVP = 120
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.FrameOfReferenceUID = frame_uid
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelSpacing = [0.7, 0.7]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    return ds


def _meta(sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


__all__ = [
    "RETIRED_US_IMAGE_STORAGE",
    "TRANSFER_SYNTAX_FILES",
    "dataset_bytes",
    "dataset_sha256",
    "generate_ct_series",
    "real_file",
    "retired_us_sample",
    "sample_dirs",
    "sop_instance_uid",
    "transfer_syntax_samples",
]


def small_ct(**attributes: object) -> Dataset:
    """A tiny CT instance (4x4 pixels, explicit VR little endian) with fresh UIDs.

    Keyword arguments set or override attributes; None removes one (to make it invalid).
    """
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "P001"
    ds.PatientName = "Doe^Jane"
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(32))
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", CTImageStorage)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", generate_uid())
    return ds
