"""The direct C-STORE path (`noctis.scp.direct_store`): requests taken off the socket by the DUL
thread must store and answer exactly as pynetdicom's path does, leave every other message to
pynetdicom, and lose nothing when a transfer breaks off.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_ECHO_RQ, C_FIND_RSP, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_STORE
from pynetdicom.pdu import P_DATA_TF
from scp_support import AE_TITLE, MODALITY, RunningScp, assert_stored_as_sent, stored_data_set
from sqlalchemy import select

from noctis.core.ingest import FacilityRef
from noctis.core.runtime import Runtime
from noctis.index.models import Instance
from noctis.scp import command_set, status
from noctis.scp.server import Scp
from noctis.storage import incoming
from support import wait
from support.archive import index_counts, register_facility
from support.dicomdata import dataset_bytes, generate_ct_series, sop_instance_uid
from support.ports import LOOPBACK

CT_UID = "1.2.840.10008.5.1.4.1.1.2"


# --- the command set codec, against pynetdicom's own encoding ---------------------------------


def _pynetdicom_command(message: Any, primitive: Any) -> bytes:
    """The command set pynetdicom encodes for ``primitive`` (the first fragment; the data
    set, if any, follows in others)."""
    message.primitive_to_message(primitive)
    fragment = next(iter(message.encode_msg(1, 0)))
    control, *_ = fragment.presentation_data_value_list[0][1][:1]
    assert control == 0x03  # the whole command set, in one fragment
    return bytes(fragment.presentation_data_value_list[0][1][1:])


def _store_primitive(message_id: int, instance: str) -> C_STORE:
    request = C_STORE()
    request.MessageID = message_id
    request.AffectedSOPClassUID = CT_UID
    request.AffectedSOPInstanceUID = instance
    request.Priority = 2
    request.DataSet = io.BytesIO(b"\x08\x00\x16\x00")
    return request


def test_store_request_read_from_pynetdicom_encoding() -> None:
    encoded = _pynetdicom_command(C_STORE_RQ(), _store_primitive(513, "1.2.3.45"))
    request = command_set.read_store_request(encoded)
    assert request == command_set.StoreRequest(513, CT_UID, "1.2.3.45")


def test_other_commands_are_not_store_requests() -> None:
    echo = C_ECHO()
    echo.MessageID = 1
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    assert command_set.read_store_request(_pynetdicom_command(C_ECHO_RQ(), echo)) is None
    store = _pynetdicom_command(C_STORE_RQ(), _store_primitive(1, "1.2.3"))
    assert command_set.read_store_request(store[:-3]) is None  # truncated
    response = _pynetdicom_command(C_STORE_RSP(), _store_response_primitive(0, None))
    assert command_set.read_store_request(response) is None


def _store_response_primitive(code: int, comment: str | None) -> C_STORE:
    response = C_STORE()
    response.MessageIDBeingRespondedTo = 7
    response.AffectedSOPClassUID = CT_UID
    response.AffectedSOPInstanceUID = "1.2.3.4.5"  # odd length: padded with a NUL
    response.Status = code
    if comment is not None:
        response.ErrorComment = comment
    return response


@pytest.mark.parametrize(
    ("code", "comment"),
    [(0x0000, None), (0xA700, "object store unavailable, try again later"), (0xC100, "odd")],
)
def test_store_response_bytes_equal_pynetdicom(code: int, comment: str | None) -> None:
    request = command_set.StoreRequest(7, CT_UID, "1.2.3.4.5")
    ours = command_set.store_response(request, code, comment)
    theirs = _pynetdicom_command(C_STORE_RSP(), _store_response_primitive(code, comment))
    assert ours == theirs


@pytest.mark.parametrize(
    ("code", "identifier", "comment"),
    [
        (0xFF00, True, None),
        (0xFF01, True, None),
        (0x0000, False, None),
        (0xFE00, False, None),
        (0xA900, False, "QueryRetrieveLevel PATIENT is not in the Study Root model"),
    ],
)
def test_find_response_bytes_equal_pynetdicom(
    code: int, identifier: bool, comment: str | None
) -> None:
    """C-FIND responses, written by `noctis.scp.find` with the command set codec."""
    find_model = "1.2.840.10008.5.1.4.1.2.2.1"
    response = C_FIND()
    response.MessageIDBeingRespondedTo = 9
    response.AffectedSOPClassUID = find_model
    response.Status = code
    if identifier:
        response.Identifier = io.BytesIO(b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ")
    if comment is not None:
        response.ErrorComment = comment
    theirs = _pynetdicom_command(C_FIND_RSP(), response)
    ours = command_set.find_response(
        9, find_model, code, has_identifier=identifier, comment=comment
    )
    assert ours == theirs


# --- on the wire ------------------------------------------------------------------------------


@pytest.fixture
def scp(embedded_archive: Runtime) -> Iterator[RunningScp]:
    register_facility(embedded_archive, "st-mary", [{"aeTitle": MODALITY}])
    running = Scp(embedded_archive, host=LOOPBACK, port=0).start()
    yield RunningScp(running, embedded_archive)
    running.stop(timeout=5)


def _associate(port: int, max_pdu: int = 16382) -> Any:
    ae = AE(ae_title=MODALITY)
    ae.maximum_pdu_size = max_pdu  # the largest PDU the SCP may send us
    ae.add_requested_context(CT_UID, ExplicitVRLittleEndian)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate(LOOPBACK, port, ae_title=AE_TITLE)
    assert assoc.is_established
    return assoc


def _sending_pdus_of(monkeypatch: pytest.MonkeyPatch, length: int) -> None:
    """pynetdicom cuts the messages it sends into PDUs of ``length`` (our test SCU's, and the
    SCP's own pynetdicom responses, in this process)."""
    monkeypatch.setattr(DIMSEServiceProvider, "maximum_pdu_size", property(lambda _: length))


@pytest.mark.parametrize(
    "pdu_length",
    [
        pytest.param(64, id="command-split-left-to-pynetdicom"),
        pytest.param(1024, id="data-set-in-many-pdus"),
    ],
)
def test_fragmented_messages_store_the_bytes_sent(
    scp: RunningScp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pdu_length: int
) -> None:
    files = generate_ct_series(tmp_path / "ct", slices=3, size=64)
    _sending_pdus_of(monkeypatch, pdu_length)
    assoc = _associate(scp.port, max_pdu=pdu_length)  # responses come in fragments too
    try:
        codes = [int(assoc.send_c_store(path).Status) for path in files]
        assert int(assoc.send_c_echo().Status) == status.SUCCESS
    finally:
        assoc.release()
    assert codes == [status.SUCCESS] * 3
    assert_stored_as_sent(scp.runtime, files, tmp_path)
    _wait_until_closed(scp)
    assert _spool_files(scp) == []  # nor the spool file made ready for a next request
    # The digest the index keeps (hashed while receiving) is the stored object's data set's
    # (the File Meta is left out: duplicates are compared on the data set).
    with scp.runtime.sessions() as session:
        rows = session.execute(select(Instance.sop_instance_uid, Instance.sha256)).all()
    assert len(rows) == 3
    for sop_uid, digest in rows:
        stored = stored_data_set(scp.runtime, sop_uid, tmp_path)
        assert hashlib.sha256(stored).hexdigest() == digest


def _request_pdus(path: Path, context_id: int, max_pdu: int = 4096) -> list[bytes]:
    """The P-DATA-TF PDUs of a C-STORE-RQ for ``path``, as pynetdicom encodes them."""
    message = C_STORE_RQ()
    primitive = _store_primitive(1, sop_instance_uid(path))
    primitive.DataSet = io.BytesIO(dataset_bytes(path))
    message.primitive_to_message(primitive)
    pdus = []
    for fragment in message.encode_msg(context_id, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(fragment)
        pdus.append(pdu.encode())
    return pdus


def _spool_files(scp: RunningScp) -> list[Path]:
    return sorted(scp.scp.scp_context.spool_dir.glob("incoming-*"))


def _wait_until_closed(scp: RunningScp) -> None:
    wait.until(lambda: not scp.scp.active_associations, timeout=5, what="every association to end")


def test_abort_mid_data_set_stores_nothing_and_leaves_no_spool_file(
    scp: RunningScp, tmp_path: Path
) -> None:
    (path,) = generate_ct_series(tmp_path / "ct", slices=1, size=64)
    assoc = _associate(scp.port)
    context_id = assoc.accepted_contexts[0].context_id
    pdus = _request_pdus(path, context_id)
    assert len(pdus) > 2
    for pdu in pdus[:2]:  # the command and the first data set fragment
        assoc.dul.socket.send(pdu)
    wait.until(lambda: _spool_files(scp), timeout=5, what="the data set to be spooled")
    assoc.abort()
    _wait_until_closed(scp)
    assert _spool_files(scp) == []
    assert index_counts(scp.runtime)["instance"] == 0


def test_data_set_fragment_on_another_context_aborts(scp: RunningScp, tmp_path: Path) -> None:
    (path,) = generate_ct_series(tmp_path / "ct", slices=1, size=64)
    assoc = _associate(scp.port)
    store_context = assoc.accepted_contexts[0].context_id
    other = assoc.accepted_contexts[1].context_id
    command = _request_pdus(path, store_context)[0]
    assoc.dul.socket.send(command)
    assoc.dul.socket.send(_request_pdus(path, other)[1])  # a data set PDV on the wrong context
    wait.until(lambda: not assoc.is_established, timeout=5, what="the SCP to end the association")
    assert assoc.is_aborted
    _wait_until_closed(scp)
    assert _spool_files(scp) == []
    assert index_counts(scp.runtime)["instance"] == 0


def test_spool_failure_answers_out_of_resources_and_the_next_store_works(
    scp: RunningScp, tmp_path: Path
) -> None:
    first, second = generate_ct_series(tmp_path / "ct", slices=2, size=64)
    spool = scp.scp.scp_context.spool_dir
    assoc = _associate(scp.port)
    try:
        spool.rmdir()  # gone from under the SCP: no spool file can be created
        refused = assoc.send_c_store(first)
        spool.mkdir()
        stored = assoc.send_c_store(second)
    finally:
        assoc.release()
    assert int(refused.Status) == status.OUT_OF_RESOURCES
    assert "spool" in str(refused.ErrorComment)
    assert int(stored.Status) == status.SUCCESS
    assert index_counts(scp.runtime)["instance"] == 1
    assert_stored_as_sent(scp.runtime, [second], tmp_path)


def test_refusals_carry_the_same_status_and_comment(
    scp: RunningScp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data set whose SOP Instance UID differs from the request's: A900 with its comment,
    through the direct path as through pynetdicom's."""
    (path,) = generate_ct_series(tmp_path / "ct", slices=1, size=64)
    codes: list[tuple[int, str]] = []
    for pdu_length in (64, 16382):  # command split (pynetdicom's path) and whole (direct)
        _sending_pdus_of(monkeypatch, pdu_length)
        assoc = _associate(scp.port)
        try:
            context_id = assoc.accepted_contexts[0].context_id
            request = _store_primitive(1, generate_uid())  # not the data set's
            request.DataSet = io.BytesIO(dataset_bytes(path))
            assoc._reactor_checkpoint.clear()
            wait.until(
                lambda assoc=assoc: assoc._is_paused,
                timeout=5,
                what="the reactor to pause",
                interval=0.001,
            )
            assoc.dimse.send_msg(request, context_id)
            _, response = assoc.dimse.get_msg(block=True)
            assoc._reactor_checkpoint.set()
            codes.append((int(response.Status), str(response.ErrorComment)))
        finally:
            assoc.release()
    assert codes[0] == codes[1]
    assert codes[0][0] == status.DOES_NOT_MATCH_SOP_CLASS
    assert index_counts(scp.runtime)["instance"] == 0


# --- where a data set waits: a named file, memory, or an unnamed file -------------------------


@pytest.fixture
def either_scp(runtime: Runtime, facility: FacilityRef) -> Iterator[RunningScp]:
    """An SCP on each configuration: the filesystem store links named spool files into
    place, S3 copies the data, so it is spooled in memory up to IN_MEMORY_LIMIT and to an
    unnamed file beyond."""
    running = Scp(runtime, host=LOOPBACK, port=0).start()
    yield RunningScp(running, runtime)
    running.stop(timeout=5)


def test_data_sets_below_and_above_the_in_memory_limit_are_stored_as_sent(
    either_scp: RunningScp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(incoming, "IN_MEMORY_LIMIT", 64 << 10)
    small = generate_ct_series(tmp_path / "small", slices=2, size=32)  # ~2 KB each
    large = generate_ct_series(tmp_path / "large", slices=2, size=256)  # ~130 KB each
    assert all(path.stat().st_size > 64 << 10 for path in large)
    assoc = _associate(either_scp.port)
    try:
        codes = [int(assoc.send_c_store(path).Status) for path in small + large]
    finally:
        assoc.release()
    assert codes == [status.SUCCESS] * 4
    assert_stored_as_sent(either_scp.runtime, small + large, tmp_path)
    _wait_until_closed(either_scp)
    assert _spool_files(either_scp) == []


def test_abort_mid_data_set_stores_nothing_in_either_configuration(
    either_scp: RunningScp, tmp_path: Path
) -> None:
    (path,) = generate_ct_series(tmp_path / "ct", slices=1, size=64)
    assoc = _associate(either_scp.port)
    context_id = assoc.accepted_contexts[0].context_id
    for pdu in _request_pdus(path, context_id)[:2]:  # the command and a first fragment
        assoc.dul.socket.send(pdu)
    # Lets the SCP read the fragments, so the abort comes mid data set (the fallback path has
    # no spool file to wait for); if it came first the test would pass, testing less.
    time.sleep(0.2)
    assoc.abort()
    _wait_until_closed(either_scp)
    assert _spool_files(either_scp) == []
    assert index_counts(either_scp.runtime)["instance"] == 0
    # and the association after it stores as usual
    assoc = _associate(either_scp.port)
    try:
        assert int(assoc.send_c_store(path).Status) == status.SUCCESS
    finally:
        assoc.release()
    assert_stored_as_sent(either_scp.runtime, [path], tmp_path)
