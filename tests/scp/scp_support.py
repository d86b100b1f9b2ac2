"""Names and helpers the SCP tests share (the fixtures are in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread

from noctis.archive import Archive
from noctis.scp.server import Scp
from support.archive import indexed_objects
from support.dicomdata import dataset_bytes, sop_instance_uid

AE_TITLE = "NOCTIS"  # the SCP's
MODALITY = "MODALITY"  # st-mary's modality: every service
ECHO_ONLY = "ECHOONLY"  # st-mary's AE allowed C-ECHO only


@dataclass
class RunningScp:
    scp: Scp
    archive: Archive

    @property
    def port(self) -> int:
        return self.scp.port


def stored_data_set(archive: Archive, sop_uid: str, workdir: Path) -> bytes:
    """The data set bytes of the stored object (after its file meta)."""
    return dataset_bytes(stored_file(archive, sop_uid, workdir))


def assert_stored_as_sent(archive: Archive, files: list[Path], workdir: Path) -> None:
    for path in files:
        assert stored_data_set(archive, sop_instance_uid(path), workdir) == dataset_bytes(path), (
            f"{path.name}: stored bytes differ from the bytes sent"
        )


def stored_file(archive: Archive, sop_uid: str, workdir: Path) -> Path:
    key = indexed_objects(archive)[sop_uid]
    copy = workdir / f"stored-{sop_uid}.dcm"
    copy.write_bytes(archive.store.get(key))
    return copy


def assert_same_instance(stored: Path, sent: Path) -> None:
    """Same transfer syntax and the same elements, pixel data included.

    For senders that re-encode as they send (dcmtk's storescu drops group lengths and may fix
    padding), where byte equality is not the sender's promise.
    """
    ours, theirs = dcmread(stored), dcmread(sent)
    assert ours.file_meta.TransferSyntaxUID == theirs.file_meta.TransferSyntaxUID, sent.name
    for ds in (ours, theirs):
        for element in list(ds):
            # group lengths and trailing padding: encoders differ
            if element.tag.element == 0 or element.tag == 0xFFFCFFFC:
                del ds[element.tag]
        if "PixelData" in ds and ds.file_meta.TransferSyntaxUID.is_compressed:
            ds["PixelData"].VR = "OB"  # encapsulated pixel data is OB; some files say OW
    assert ours == theirs, f"{sent.name}: stored instance differs from the one sent"
