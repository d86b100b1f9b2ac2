"""The SCP's event-driven reactors (``noctis.scp.reactor``) keep pynetdicom's timers and life
cycle: an idle association is aborted at the network timeout (pynetdicom's default response), a
peer's release and abort end it at once, and stores on one association are answered in order.
The File Meta written for each received instance is what pydicom writes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import UID
from pynetdicom import AE
from pynetdicom.dsutils import create_file_meta, encode_file_meta
from pynetdicom.sop_class import CTImageStorage, Verification
from scp_support import AE_TITLE, MODALITY

from noctis.core.runtime import Runtime
from noctis.dicom.part10 import file_meta
from noctis.index.models import Instance
from noctis.scp.server import Scp
from support import wait
from support.archive import embedded_settings, open_runtime, register_facility
from support.dicomdata import generate_ct_series
from support.ports import LOOPBACK

NETWORK_TIMEOUT = 1.0


@pytest.fixture
def quick_timeout_scp(tmp_path: Path) -> Iterator[Scp]:
    runtime = open_runtime(
        embedded_settings(tmp_path, ae_title=AE_TITLE, network_timeout=NETWORK_TIMEOUT)
    )
    register_facility(runtime, "st-mary", [{"aeTitle": MODALITY}])
    scp = Scp(runtime, host=LOOPBACK, port=0).start()
    yield scp
    scp.stop(timeout=2)
    runtime.close()


def _requestor() -> AE:
    ae = AE(ae_title=MODALITY)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    return ae


def test_an_idle_association_is_aborted_at_the_network_timeout(quick_timeout_scp: Scp) -> None:
    assoc = _requestor().associate(LOOPBACK, quick_timeout_scp.port, ae_title=AE_TITLE)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    time.sleep(NETWORK_TIMEOUT / 2)  # the timer under test: half of it passes...
    assert assoc.is_established, "ended before the network timeout"
    wait.until(
        lambda: not assoc.is_established, timeout=10, what="the SCP to end it"
    )  # ...then all
    assert assoc.is_aborted
    wait.until(
        lambda: not quick_timeout_scp.active_associations, timeout=5, what="the SCP to forget it"
    )


def test_release_and_abort_by_the_peer_end_the_association(quick_timeout_scp: Scp) -> None:
    ae = _requestor()
    released = ae.associate(LOOPBACK, quick_timeout_scp.port, ae_title=AE_TITLE)
    assert released.send_c_echo().Status == 0x0000
    aborted = ae.associate(LOOPBACK, quick_timeout_scp.port, ae_title=AE_TITLE)
    assert aborted.is_established
    assert len(quick_timeout_scp.active_associations) == 2

    released.release()
    assert released.is_released
    aborted.abort()
    # Well before the network timeout: the reactors act on the peer's PDUs as they come.
    wait.until(  # by the release and the abort, long before the network timeout would
        lambda: not quick_timeout_scp.active_associations,
        timeout=NETWORK_TIMEOUT / 2,
        what="both associations to end",
    )


def test_stores_on_one_association_are_answered_in_order(
    quick_timeout_scp: Scp, tmp_path: Path
) -> None:
    files = generate_ct_series(tmp_path / "series", slices=40, size=32)
    assoc = _requestor().associate(LOOPBACK, quick_timeout_scp.port, ae_title=AE_TITLE)
    try:
        statuses = [assoc.send_c_store(path).Status for path in files]
    finally:
        assoc.release()
    assert statuses == [0x0000] * len(files)
    runtime: Runtime = quick_timeout_scp.runtime
    with runtime.reader() as session:
        stored = {uid for (uid,) in session.query(Instance.sop_instance_uid)}
    assert stored == {dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in files}


@pytest.mark.parametrize(
    ("sop_class", "sop_instance", "syntax"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5", "1.2.840.10008.1.2.1"),  # even lengths
        ("1.2.840.10008.5.1.4.1.1.7", "1.2.3.45", "1.2.840.10008.1.2"),  # odd: padded
        ("1.2.840.10008.5.1.4.1.1.4", "2.25.1234567890123", "1.2.840.10008.1.2.4.50"),
    ],
)
def test_file_meta_is_what_pydicom_writes(sop_class: str, sop_instance: str, syntax: str) -> None:
    expected = encode_file_meta(
        create_file_meta(
            sop_class_uid=UID(sop_class),
            sop_instance_uid=UID(sop_instance),
            transfer_syntax=UID(syntax),
        )
    )
    assert file_meta(sop_class, sop_instance, syntax) == expected
