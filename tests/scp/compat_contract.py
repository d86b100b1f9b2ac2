"""What `noctis.scp.fast.compat` assumes of pynetdicom, asserted one by one.

Run by test_compat_contract.py in a subprocess against each supported pynetdicom version
(its directory first on PYTHONPATH); run alone, against the installed one. A failure names
the assumption an upgrade broke.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynetdicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, _config, build_role, dimse_messages, evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.sop_class import (
    CTImageStorage,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from pynetdicom.transport import AssociationSocket, RequestHandler
from scp_support import AE_TITLE, MODALITY, RunningScp, make_instance

from noctis.core.runtime import Runtime
from noctis.scp.client import echo, store_files
from noctis.scp.fast import compat
from noctis.scp.fast.association import AcceptedAssociation
from noctis.scp.fast.direct_store import DirectStore
from noctis.scp.fast.reactor import EventDrivenDUL
from noctis.scp.fast.requestor import RequestingAssociation
from noctis.scp.server import Scp
from support.archive import register_facility
from support.ports import LOOPBACK, free_port

EXPECTED_VERSION = os.environ.get("NOCTIS_PYNETDICOM_VERSION")
DEST = "DEST"


def test_the_version_under_test() -> None:
    if EXPECTED_VERSION:
        # importlib.metadata: 3.0.0's own __version__ says 3.0.0.dev0
        assert importlib.metadata.version("pynetdicom") == EXPECTED_VERSION, pynetdicom.__file__
        assert Path(pynetdicom.__file__).parent.parent.name == f"pynetdicom-{EXPECTED_VERSION}"


def test_config_has_the_settings_compat_sets() -> None:
    for name in (
        "STORE_SEND_CHUNKED_DATASET",
        "STORE_RECV_CHUNKED_DATASET",
        "LOG_HANDLER_LEVEL",
        "LOG_REQUEST_IDENTIFIERS",
        "LOG_RESPONSE_IDENTIFIERS",
    ):
        assert hasattr(_config, name), f"pynetdicom._config.{name} is gone"


def test_chunked_receive_makes_its_spool_file_and_file_meta_as_compat_assumes() -> None:
    source = inspect.getsource(dimse_messages)
    for name in ("NamedTemporaryFile", "create_file_meta", "write_file_meta_info"):
        assert hasattr(dimse_messages, name), f"dimse_messages.{name} is gone"
        assert f"{name}(" in source, f"dimse_messages no longer calls {name}"


def _association() -> Association:
    return Association(AE(), "requestor")


def test_association_has_the_members_compat_uses() -> None:
    assoc = _association()
    assert isinstance(assoc._accepted_cx, dict)
    assert assoc._sent_release is False
    assert assoc._kill is False
    assert isinstance(assoc._is_paused, bool)
    assert isinstance(assoc._reactor_checkpoint, threading.Event)
    assert isinstance(assoc._dul_ready, threading.Event)
    assert list(inspect.signature(Association._serve_request).parameters) == [
        "self",
        "msg",
        "context_id",
    ]
    assert list(inspect.signature(Association._run_reactor).parameters) == ["self"]
    # pynetdicom's own reactor serves requests through _serve_request, and runs _run_reactor
    assert "self._serve_request(" in inspect.getsource(Association._run_reactor)
    assert "self._run_reactor()" in inspect.getsource(Association.run_reactor)


def test_dul_has_the_members_compat_uses() -> None:
    dul = _association().dul
    assert dul._kill_thread is False
    assert hasattr(dul._idle_timer, "start") and hasattr(dul._idle_timer, "restart")
    assert isinstance(dul._recv_pdu, queue.Queue)
    for name in ("_read_pdu_data", "_is_transport_event", "_process_recv_primitive"):
        assert callable(getattr(DULServiceProvider, name)), f"DULServiceProvider.{name} is gone"
    assert list(inspect.signature(DULServiceProvider._decode_pdu).parameters) == [
        "self",
        "bytestream",
    ]
    assert "self._read_pdu_data()" in inspect.getsource(DULServiceProvider._is_transport_event)
    assert "self._is_transport_event()" in inspect.getsource(DULServiceProvider.run_reactor)
    assert "_is_connected" in inspect.getsource(AssociationSocket)


def test_a_new_associations_classes_can_be_swapped() -> None:
    assoc = _association()
    compat.become(assoc.dul, EventDrivenDUL)
    compat.become(assoc, AcceptedAssociation)
    assert isinstance(assoc, AcceptedAssociation) and isinstance(assoc.dul, EventDrivenDUL)
    requestor = compat.become(_association(), RequestingAssociation)
    assert isinstance(requestor, RequestingAssociation)
    with pytest.raises(TypeError):
        compat.become(object(), AcceptedAssociation)


def test_the_acceptor_opens_an_association_before_it_starts_it() -> None:
    """EVT_CONN_OPEN comes from RequestHandler.handle, before assoc.start()."""
    source = inspect.getsource(RequestHandler.handle)
    assert source.index("EVT_CONN_OPEN") < source.index("assoc.start()")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often Noctis's hooks ran: each must be reached through pynetdicom's own code."""
    counted: dict[str, int] = {}

    def count(cls: type, name: str) -> None:
        original = getattr(cls, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counted[f"{cls.__name__}.{name}"] = counted.get(f"{cls.__name__}.{name}", 0) + 1
            return original(*args, **kwargs)

        monkeypatch.setattr(cls, name, wrapper)

    count(AcceptedAssociation, "serve_request")
    count(AcceptedAssociation, "reactor_loop")
    count(RequestingAssociation, "serve_request")
    count(EventDrivenDUL, "read_pdu")
    count(DirectStore, "take")
    return counted


@pytest.fixture
def destination() -> Iterator[tuple[int, list[str]]]:
    """A plain pynetdicom storage SCP to move to: its port and what it received."""
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title=DEST)
    ae.add_supported_context(CTImageStorage)
    port = free_port()
    server = ae.start_server(
        (LOOPBACK, port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    yield port, received
    server.shutdown()


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "plain"])
def test_a_real_association_echoes_stores_finds_gets_moves_and_commits(
    embedded_archive: Runtime,
    tmp_path: Path,
    calls: dict[str, int],
    destination: tuple[int, list[str]],
    fast_path: bool,
) -> None:
    dest_port, moved = destination
    register_facility(
        embedded_archive,
        "st-mary",
        [
            {"aeTitle": MODALITY},
            {"aeTitle": DEST, "host": LOOPBACK, "port": dest_port, "services": ["store"]},
        ],
    )
    embedded_archive.settings.scp_fast_path = fast_path
    scp = RunningScp(Scp(embedded_archive, host=LOOPBACK, port=0).start(), embedded_archive)
    try:
        files = [make_instance(tmp_path / "in", StudyInstanceUID="1.2.826.0.1.99.1")]
        assert echo(LOOPBACK, scp.port, AE_TITLE, MODALITY) == 0x0000
        report = store_files(LOOPBACK, scp.port, files, AE_TITLE, MODALITY)
        assert report.failures == [] and report.succeeded == 1
        sop_uid = files[0].stem

        ae = AE(ae_title=MODALITY)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        ae.add_requested_context(CTImageStorage)
        ae.add_requested_context(StorageCommitmentPushModel)
        got: list[str] = []
        committed: list[int] = []

        def on_commitment_report(event: Any) -> tuple[int, None]:
            committed.append(int(event.request.EventTypeID))
            return 0x0000, None

        def on_get_store(event: Any) -> int:
            got.append(str(event.request.AffectedSOPInstanceUID))
            return 0x0000

        assoc = ae.associate(
            LOOPBACK,
            scp.port,
            ae_title=AE_TITLE,
            ext_neg=[
                build_role(CTImageStorage, scp_role=True),
                build_role(StorageCommitmentPushModel, scu_role=True, scp_role=True),
            ],
            evt_handlers=[
                (evt.EVT_C_STORE, on_get_store),
                (evt.EVT_N_EVENT_REPORT, on_commitment_report),
            ],
        )
        assert assoc.is_established
        try:
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = "1.2.826.0.1.99.1"
            found = [
                int(rsp.Status)
                for rsp, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
            ]
            assert found == [0xFF00, 0x0000]
            statuses = [
                int(rsp.Status)
                for rsp, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
            ]
            assert statuses[-1] == 0x0000 and got == [sop_uid]
            statuses = [
                int(rsp.Status)
                for rsp, _ in assoc.send_c_move(
                    query, DEST, StudyRootQueryRetrieveInformationModelMove
                )
            ]
            assert statuses[-1] == 0x0000 and moved == [sop_uid]
            # Storage commitment: the N-EVENT-REPORT follows on this association.
            information = Dataset()
            information.TransactionUID = "1.2.826.0.1.99.2"
            item = Dataset()
            item.ReferencedSOPClassUID = CTImageStorage
            item.ReferencedSOPInstanceUID = sop_uid
            information.ReferencedSOPSequence = [item]
            answer, _ = assoc.send_n_action(
                information, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1"
            )
            assert int(answer.Status) == 0x0000
            deadline = time.monotonic() + 10
            while not committed and time.monotonic() < deadline:
                time.sleep(0.01)
            assert committed == [1]
        finally:
            assoc.release()
    finally:
        scp.scp.stop(timeout=5)
    # Noctis's hooks were reached through pynetdicom's own calls
    assert calls.get("AcceptedAssociation.serve_request", 0) >= 4  # find, get, move, commit
    assert calls.get("AcceptedAssociation.reactor_loop", 0) >= 1
    assert calls.get("RequestingAssociation.serve_request", 0) >= 0  # only on the race
    if fast_path:
        assert calls.get("EventDrivenDUL.read_pdu", 0) > 0
        assert calls.get("DirectStore.take", 0) > 0
    else:
        assert "EventDrivenDUL.read_pdu" not in calls and "DirectStore.take" not in calls
