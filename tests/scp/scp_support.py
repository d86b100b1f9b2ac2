"""Names and helpers the SCP tests share (the fixtures are in conftest.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from noctis.core.runtime import Runtime
from noctis.scp.server import Scp
from support import wait
from support.archive import indexed_objects
from support.dicomdata import dataset_bytes, small_ct, sop_instance_uid
from support.ports import LOOPBACK

AE_TITLE = "NOCTIS"  # the SCP's
MODALITY = "MODALITY"  # st-mary's modality: every service
ECHO_ONLY = "ECHOONLY"  # st-mary's AE allowed C-ECHO only


@dataclass
class RunningScp:
    scp: Scp
    runtime: Runtime

    @property
    def port(self) -> int:
        return self.scp.port


def stored_data_set(runtime: Runtime, sop_uid: str, workdir: Path) -> bytes:
    """The data set bytes of the stored object (after its file meta)."""
    return dataset_bytes(stored_file(runtime, sop_uid, workdir))


def assert_stored_as_sent(runtime: Runtime, files: list[Path], workdir: Path) -> None:
    for path in files:
        assert stored_data_set(runtime, sop_instance_uid(path), workdir) == dataset_bytes(path), (
            f"{path.name}: stored bytes differ from the bytes sent"
        )


def stored_file(runtime: Runtime, sop_uid: str, workdir: Path) -> Path:
    key = indexed_objects(runtime)[sop_uid]
    copy = workdir / f"stored-{sop_uid}.dcm"
    copy.write_bytes(runtime.store.get(key))
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


def make_instance(directory: Path, **attributes: object) -> Path:
    """A tiny CT instance (4x4 pixels) named by its SOP Instance UID; keyword arguments set
    or override attributes."""
    ds = small_ct(**attributes)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def query(
    port: int,
    identifier: Dataset,
    *,
    model: str = "study",
    calling: str = MODALITY,
) -> list[tuple[int, Dataset | None]]:
    """C-FIND with pynetdicom: every (status, identifier) the SCP answered."""
    ae = AE(ae_title=calling)
    sop_class = FIND_MODELS[model]
    ae.add_requested_context(sop_class)
    assoc = ae.associate(LOOPBACK, port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        return [
            (int(rsp.Status), found)
            for rsp, found in assoc.send_c_find(identifier, sop_class)
            if "Status" in rsp
        ]
    finally:
        assoc.release()


FIND_MODELS = {
    "study": StudyRootQueryRetrieveInformationModelFind,
    "patient": PatientRootQueryRetrieveInformationModelFind,
}


def identifier(level: str, **keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


# Implicit VR little endian: QueryRetrieveLevel=STUDY, then a sequence of undefined length
# whose first "item" is not an item tag, so no decoder can read past it.
UNDECODABLE_IDENTIFIER = (
    b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY "
    b"\x08\x00\x10\x11\xff\xff\xff\xff\x01\x02\x03\x04\x05\x06\x07\x08"
)


def raw_request(port: int, request: Any, *, calling: str = MODALITY) -> list[int]:
    """Send a C-FIND/C-GET/C-MOVE request primitive as built (identifier bytes untouched)
    on an implicit VR context; the statuses of every response until the final one."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(request.AffectedSOPClassUID, ImplicitVRLittleEndian)
    assoc = ae.associate(LOOPBACK, port, ae_title=AE_TITLE)
    assert assoc.is_established
    codes: list[int] = []
    try:
        context = assoc.accepted_contexts[0]
        # Hold the requestor's reactor, as pynetdicom's own send_c_* do, so the responses
        # come to us.
        assoc._reactor_checkpoint.clear()
        wait.until(lambda: assoc._is_paused, timeout=5, what="the reactor to pause", interval=0.001)
        assoc.dimse.send_msg(request, context.context_id)
        while True:
            _, response = assoc.dimse.get_msg(block=True)
            if response is None:
                break
            codes.append(int(response.Status))
            if int(response.Status) not in (0xFF00, 0xFF01):
                break
        assoc._reactor_checkpoint.set()
    finally:
        assoc.release()
    return codes


RETRIEVE_MODELS = {
    "study": (
        StudyRootQueryRetrieveInformationModelMove,
        StudyRootQueryRetrieveInformationModelGet,
    ),
    "patient": (
        PatientRootQueryRetrieveInformationModelMove,
        PatientRootQueryRetrieveInformationModelGet,
    ),
}


def move(
    port: int, asked: Dataset, destination: str, *, model: str = "study", calling: str = MODALITY
) -> list[Dataset]:
    """C-MOVE with pynetdicom: the status data set of every response."""
    sop_class = RETRIEVE_MODELS[model][0]
    ae = AE(ae_title=calling)
    ae.add_requested_context(sop_class)
    assoc = ae.associate(LOOPBACK, port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        return [
            rsp for rsp, _ in assoc.send_c_move(asked, destination, sop_class) if "Status" in rsp
        ]
    finally:
        assoc.release()


@dataclass
class Received:
    transfer_syntax: str
    data_set: bytes


def get(
    port: int,
    asked: Dataset,
    storage: dict[str, list[str]],
    *,
    model: str = "study",
    calling: str = MODALITY,
) -> tuple[list[Dataset], dict[str, Received]]:
    """C-GET with pynetdicom, accepting ``storage`` (SOP class -> transfer syntaxes, one
    context each); the status data sets and what arrived, by SOP Instance UID."""
    sop_class = RETRIEVE_MODELS[model][1]
    ae = AE(ae_title=calling)
    ae.add_requested_context(sop_class)
    roles = []
    for storage_class, syntaxes in storage.items():
        for syntax in syntaxes:
            ae.add_requested_context(storage_class, syntax)
        roles.append(build_role(storage_class, scp_role=True))
    received: dict[str, Received] = {}

    def on_store(event: Any) -> int:
        try:
            data = dataset_bytes(Path(event.dataset_path))
        except AttributeError:
            data = event.encoded_dataset(include_meta=False)
        uid = str(event.request.AffectedSOPInstanceUID)
        received[uid] = Received(str(event.context.transfer_syntax), data)
        return 0x0000

    assoc = ae.associate(
        LOOPBACK, port, ae_title=AE_TITLE, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    assert assoc.is_established
    statuses: list[Dataset] = []
    try:
        for rsp, found in assoc.send_c_get(asked, sop_class):
            if "Status" not in rsp:
                continue
            statuses.append(rsp)
            # The final response's identifier lists the failed instances: keep it beside the
            # status, where final_failed() finds it.
            if found is not None and "FailedSOPInstanceUIDList" in found:
                rsp.FailedSOPInstanceUIDList = found.FailedSOPInstanceUIDList
    finally:
        assoc.release()
    return statuses, received


def final_counts(statuses: list[Dataset]) -> tuple[int, dict[str, int]]:
    """The final status and its sub-operation counts."""
    last = statuses[-1]
    counts = {
        kind: int(last.get(f"NumberOf{kind.capitalize()}Suboperations", 0) or 0)
        for kind in ("completed", "failed", "warning")
    }
    return int(last.Status), counts


def scp_environment(
    data_dir: Path, port: int, health_port: int, processes: int = 1
) -> dict[str, str]:
    """The environment of a `noctis scp` or `noctis serve` process on embedded settings, on
    loopback ports."""
    return {
        **os.environ,
        "NOCTIS_MODE": "embedded",
        "NOCTIS_DATA_DIR": str(data_dir),
        "NOCTIS_SCP_HOST": LOOPBACK,
        "NOCTIS_SCP_PORT": str(port),
        "NOCTIS_HEALTH_HOST": LOOPBACK,
        "NOCTIS_HEALTH_PORT": str(health_port),
        "NOCTIS_SCP_PROCESSES": str(processes),
    }
