"""Fixtures for the domain core: an Archive on each index backend, and tiny DICOM files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from noctis.archive import Archive
from noctis.index.facilities import ensure_default_facility
from noctis.index.migrate import upgrade
from noctis.ingest import FacilityRef
from noctis.queue import NullQueue
from noctis.settings import Settings


@pytest.fixture(params=["sqlite", "postgres"])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Archive]:
    """An Archive with a migrated index (SQLite or PostgreSQL) and a filesystem store."""
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    upgrade(url)
    settings = Settings(data_dir=tmp_path, database_url=url)
    archive = Archive.open(settings, queue=NullQueue())
    yield archive
    archive.close()


@pytest.fixture
def default_facility(archive: Archive) -> FacilityRef:
    with archive.sessions.begin() as session:
        facility = ensure_default_facility(session)
        return FacilityRef(facility.id, facility.name)


DicomFactory = Callable[..., Path]


@pytest.fixture
def make_dicom(tmp_path: Path) -> DicomFactory:
    """Write a small CT instance; keyword arguments override attributes."""
    counter = iter(range(1, 1_000_000))

    def make(**attributes: object) -> Path:
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.PatientID = "P001"
        ds.PatientName = "Doe^Jane"
        ds.StudyDate = "20240102"
        ds.StudyTime = "101500"
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
        path = tmp_path / f"instance-{next(counter)}.dcm"
        ds.save_as(path, enforce_file_format=True)
        return path

    return make
