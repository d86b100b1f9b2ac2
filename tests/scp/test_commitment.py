"""Storage commitment (Push Model, PS3.4 Annex J): pynetdicom asks, the archive checks each
instance in the caller's facility (index row and stored object) and reports with
N-EVENT-REPORT, on the same association when the requester negotiated it, otherwise on a new
association to the requester's registered port, retried while the requester is down.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel
from scp_support import (
    AE_TITLE,
    ECHO_ONLY,
    MODALITY,
    RunningScp,
    make_instance,
)

from noctis.core.ingest import FacilityRef
from noctis.core.runtime import Runtime
from noctis.scp.client import store_files
from noctis.scp.commitment import STORAGE_COMMITMENT_INSTANCE
from noctis.scp.metrics import get_metrics
from support import wait
from support.archive import embedded_settings, indexed_objects, open_runtime, register_facility
from support.dicomdata import sop_instance_uid
from support.incoming import ingest_file
from support.logs import ServerLogs
from support.ports import LOOPBACK, free_port, free_ports
from support.serve import EmbeddedServe

NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
PROCESSING_FAILURE = 0x0110


@dataclass
class Report:
    """One N-EVENT-REPORT the requester received."""

    event_type: int
    information: Dataset
    calling_ae: str  # of the association it came on

    @property
    def transaction_uid(self) -> str:
        return str(self.information.TransactionUID)

    @property
    def committed(self) -> set[str]:
        items = self.information.get("ReferencedSOPSequence") or []
        return {str(item.ReferencedSOPInstanceUID) for item in items}

    @property
    def failed(self) -> dict[str, int]:
        items = self.information.get("FailedSOPSequence") or []
        return {str(item.ReferencedSOPInstanceUID): int(item.FailureReason) for item in items}


@dataclass
class Requester:
    """The storage commitment SCU's side: the reports it received, however they came."""

    reports: list[Report] = field(default_factory=list)
    received: threading.Event = field(default_factory=threading.Event)

    def on_event_report(self, event: evt.Event) -> tuple[int, None]:
        self.reports.append(
            Report(
                int(event.request.EventTypeID),
                event.event_information,
                str(event.assoc.requestor.ae_title).strip(),
            )
        )
        self.received.set()
        return 0x0000, None

    def report_for(self, transaction_uid: str, timeout: float = 20) -> Report:
        return wait.until(
            lambda: next((r for r in self.reports if r.transaction_uid == transaction_uid), None),
            timeout=timeout,
            what=f"the N-EVENT-REPORT of transaction {transaction_uid}",
        )


def reports_counted(outcome: str) -> float:
    return get_metrics().commitment_reports.labels(outcome=outcome)._value.get()


def action_information(transaction_uid: str, references: list[tuple[str, str]]) -> Dataset:
    information = Dataset()
    information.TransactionUID = transaction_uid
    items = []
    for sop_class, sop_instance in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    information.ReferencedSOPSequence = items
    return information


def request_commitment(
    port: int,
    information: Dataset,
    requester: Requester,
    *,
    same_association: bool,
    calling: str = MODALITY,
    action_type: int = 1,
) -> int:
    """Send the N-ACTION; with ``same_association``, negotiate role selection so the report
    may come back on it and stay associated until it has; otherwise release at once. The
    N-ACTION status."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(StorageCommitmentPushModel)
    roles = [build_role(StorageCommitmentPushModel, scu_role=True, scp_role=True)]
    assoc = ae.associate(
        LOOPBACK,
        port,
        ae_title=AE_TITLE,
        ext_neg=roles if same_association else None,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, requester.on_event_report)],
    )
    assert assoc.is_established
    try:
        answer, _ = assoc.send_n_action(
            information, action_type, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE
        )
        code = int(answer.Status)
        if same_association and code == 0x0000:
            requester.received.wait(20)
    finally:
        assoc.release()
    return code


@pytest.fixture
def listening_requester(runtime: Runtime, facility: FacilityRef) -> tuple[Requester, int]:
    """MODALITY, registered in st-mary with a host and a free port where the test makes it
    listen (`listen`) as the commitment SCU's receiving side; (requester, port)."""
    requester = Requester()
    port = free_port()
    register_facility(
        runtime,
        "st-mary",
        [
            {"aeTitle": MODALITY, "host": LOOPBACK, "port": port},
            {"aeTitle": ECHO_ONLY, "services": ["echo"]},
        ],
    )
    return requester, port


def listen(requester: Requester, port: int) -> object:
    ae = AE(ae_title=MODALITY)
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    return ae.start_server(
        (LOOPBACK, port),
        block=False,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, requester.on_event_report)],
    )


def stored(runtime: Runtime, facility: FacilityRef, directory: Path, count: int) -> list[str]:
    """``count`` CT instances ingested into ``facility``; their SOP Instance UIDs."""
    uids = []
    for _ in range(count):
        path = make_instance(directory)
        result = ingest_file(runtime, facility, path)
        uids.append(str(result.header.sop_instance_uid))
    return uids


CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.mark.both_dimse_paths
def test_report_on_the_same_association_names_each_failure(
    scp: RunningScp, facility: FacilityRef, tmp_path: Path
) -> None:
    runtime = scp.runtime
    present = stored(runtime, facility, tmp_path / "ours", 2)
    other = register_facility(runtime, "st-john", [{"aeTitle": "JOHNMOD"}])
    theirs = stored(runtime, other, tmp_path / "theirs", 1)
    conflicting = stored(runtime, facility, tmp_path / "conflict", 1)
    missing = generate_uid()
    transaction = generate_uid()
    references = [(CT, uid) for uid in present] + [
        (CT, missing),
        (CT, theirs[0]),
        (str(MRImageStorage), conflicting[0]),
    ]
    requester = Requester()
    before = reports_counted("same-association")

    code = request_commitment(
        scp.port, action_information(transaction, references), requester, same_association=True
    )

    assert code == 0x0000
    report = requester.report_for(transaction, timeout=1)  # it came before the release
    assert report.calling_ae == MODALITY  # on the requester's own association
    assert report.event_type == 2
    assert report.committed == set(present)
    assert report.failed == {
        missing: NO_SUCH_OBJECT_INSTANCE,
        theirs[0]: NO_SUCH_OBJECT_INSTANCE,  # another facility's: as if it were not there
        conflicting[0]: CLASS_INSTANCE_CONFLICT,
    }
    assert str(report.information.RetrieveAETitle) == AE_TITLE
    assert reports_counted("same-association") == before + 1  # and acknowledged there


@pytest.mark.both_dimse_paths
def test_requester_that_released_gets_the_report_on_a_new_association(
    scp: RunningScp,
    facility: FacilityRef,
    listening_requester: tuple[Requester, int],
    tmp_path: Path,
) -> None:
    requester, port = listening_requester
    server = listen(requester, port)
    before = reports_counted("new-association")
    try:
        present = stored(scp.runtime, facility, tmp_path, 3)
        transaction = generate_uid()
        code = request_commitment(
            scp.port,
            action_information(transaction, [(CT, uid) for uid in present]),
            requester,
            same_association=False,
        )
        assert code == 0x0000
        report = requester.report_for(transaction)
    finally:
        server.shutdown()  # type: ignore[attr-defined]
    assert report.calling_ae == AE_TITLE  # the archive called the requester back
    assert report.event_type == 1
    wait.until(
        lambda: reports_counted("new-association") == before + 1,
        timeout=5,
        what="the report counted as delivered on a new association",
    )
    assert report.committed == set(present)
    assert report.failed == {}


@pytest.mark.both_dimse_paths
def test_requester_releasing_at_once_despite_role_selection_still_gets_its_report(
    scp: RunningScp,
    facility: FacilityRef,
    listening_requester: tuple[Requester, int],
    tmp_path: Path,
) -> None:
    """PS3.4 J.3.3.1.2 note: the SCU may release at any time, even one that negotiated the
    report on its association: its release is answered promptly (not after a DIMSE timeout
    spent waiting for a report response it will never send) and it is called back."""
    requester, port = listening_requester
    server = listen(requester, port)
    try:
        present = stored(scp.runtime, facility, tmp_path, 5)
        transaction = generate_uid()
        ae = AE(ae_title=MODALITY)
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate(
            LOOPBACK,
            scp.port,
            ae_title=AE_TITLE,
            ext_neg=[build_role(StorageCommitmentPushModel, scu_role=True, scp_role=True)],
        )
        assert assoc.is_established
        answer, _ = assoc.send_n_action(
            action_information(transaction, [(CT, uid) for uid in present]),
            1,
            StorageCommitmentPushModel,
            STORAGE_COMMITMENT_INSTANCE,
        )
        assert int(answer.Status) == 0x0000
        started = time.monotonic()
        assoc.release()
        assert assoc.is_released
        assert time.monotonic() - started < 5  # the requester's ACSE timeout is 30 s
        report = requester.report_for(transaction)
    finally:
        server.shutdown()  # type: ignore[attr-defined]
    assert (report.calling_ae, report.event_type) == (AE_TITLE, 1)


def test_requester_down_at_first_gets_the_report_once_it_is_up(
    scp: RunningScp,
    facility: FacilityRef,
    listening_requester: tuple[Requester, int],
    tmp_path: Path,
) -> None:
    scp.runtime.settings.commitment_report_backoff_seconds = 0.5
    requester, port = listening_requester
    present = stored(scp.runtime, facility, tmp_path, 1)
    transaction = generate_uid()
    code = request_commitment(
        scp.port,
        action_information(transaction, [(CT, present[0])]),
        requester,
        same_association=False,
    )
    assert code == 0x0000
    time.sleep(1.0)  # the first attempts find nobody listening
    assert requester.reports == []
    server = listen(requester, port)
    try:
        report = requester.report_for(transaction)
    finally:
        server.shutdown()  # type: ignore[attr-defined]
    assert report.event_type == 1
    assert report.committed == set(present)


def test_requester_that_never_comes_back_is_given_up_and_counted(
    scp: RunningScp,
    facility: FacilityRef,
    listening_requester: tuple[Requester, int],
    tmp_path: Path,
) -> None:
    scp.runtime.settings.commitment_report_attempts = 2
    scp.runtime.settings.commitment_report_backoff_seconds = 0.1
    requester, _ = listening_requester  # registered, never listening
    present = stored(scp.runtime, facility, tmp_path, 1)
    before = reports_counted("undelivered")
    code = request_commitment(
        scp.port,
        action_information(generate_uid(), [(CT, present[0])]),
        requester,
        same_association=False,
    )
    assert code == 0x0000
    wait.until(
        lambda: reports_counted("undelivered") == before + 1,
        timeout=10,
        what="the undeliverable report given up after its attempts",
    )
    assert requester.reports == []


def test_instance_whose_object_vanished_is_a_processing_failure(
    scp: RunningScp, facility: FacilityRef, tmp_path: Path
) -> None:
    runtime = scp.runtime
    kept, lost = stored(runtime, facility, tmp_path, 2)
    runtime.store.delete(indexed_objects(runtime)[lost])  # behind the index's back
    transaction = generate_uid()
    requester = Requester()

    code = request_commitment(
        scp.port,
        action_information(transaction, [(CT, kept), (CT, lost)]),
        requester,
        same_association=True,
    )

    assert code == 0x0000
    report = requester.report_for(transaction, timeout=1)
    assert report.event_type == 2
    assert report.committed == {kept}
    assert report.failed == {lost: PROCESSING_FAILURE}


def test_ae_without_the_commitment_service_is_refused(scp: RunningScp) -> None:
    requester = Requester()
    information = action_information(generate_uid(), [(CT, generate_uid())])
    ae = AE(ae_title=ECHO_ONLY)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(LOOPBACK, scp.port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        answer, _ = assoc.send_n_action(
            information, 1, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE
        )
    finally:
        assoc.release()
    assert int(answer.Status) == 0x0124
    assert requester.reports == []


@pytest.mark.parametrize(
    ("transaction", "instance", "action_type", "expected"),
    [
        ("fresh", "fresh", 2, 0x0123),  # no such action
        ("", "fresh", 1, 0x0115),  # invalid argument value: no Transaction UID
        ("fresh", None, 1, 0x0115),  # ... no Referenced SOP item
        ("fresh", "1.2.3.abc", 1, 0x0115),  # ... a referenced UID that is not one
    ],
    ids=["unknown-action", "no-transaction-uid", "no-references", "bad-uid"],
)
def test_malformed_request_gets_a_failure_and_no_report(
    scp: RunningScp, transaction: str, instance: str | None, action_type: int, expected: int
) -> None:
    def fresh(value: str) -> str:
        return generate_uid() if value == "fresh" else value

    references = [] if instance is None else [(CT, fresh(instance))]
    information = action_information(fresh(transaction), references)
    requester = Requester()
    code = request_commitment(
        scp.port, information, requester, same_association=True, action_type=action_type
    )
    assert code == expected
    assert requester.reports == []


def test_noctis_serve_commits_on_both_paths(tmp_path: Path, server_logs: ServerLogs) -> None:
    """Embedded `noctis serve` answers storage commitment with the same code: on the
    requester's association (its default facility), and on a new association to an AE
    registered with a host and port."""
    [listen_port] = free_ports(1)
    serve = EmbeddedServe(tmp_path, server_logs).start()
    port, data_dir = serve.port, serve.data_dir
    try:
        files = [make_instance(tmp_path / "ct") for _ in range(2)]
        assert store_files(LOOPBACK, port, files, AE_TITLE, "ANYMOD").failures == []
        references = [(CT, sop_instance_uid(path)) for path in files]

        # The embedded default facility admits any AE title from loopback.
        requester = Requester()
        transaction = generate_uid()
        information = action_information(transaction, references)
        code = request_commitment(
            port, information, requester, same_association=True, calling="ANYMOD"
        )
        assert code == 0x0000
        report = requester.report_for(transaction, timeout=1)
        assert (report.event_type, report.committed) == (1, {uid for _, uid in references})

        # Registered with a host and port, it may release and be called back.
        runtime = open_runtime(embedded_settings(data_dir))
        try:
            register_facility(
                runtime, "default", [{"aeTitle": MODALITY, "host": LOOPBACK, "port": listen_port}]
            )
        finally:
            runtime.close()
        requester = Requester()
        server = listen(requester, listen_port)
        try:
            transaction = generate_uid()
            information = action_information(transaction, references)
            code = request_commitment(port, information, requester, same_association=False)
            assert code == 0x0000
            report = requester.report_for(transaction)
        finally:
            server.shutdown()  # type: ignore[attr-defined]
        assert (report.calling_ae, report.event_type) == (AE_TITLE, 1)
    finally:
        serve.stop()
