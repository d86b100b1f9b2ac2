"""The DIMSE audit trail, DicomNodes that serve only some facilities, and DICOM TLS."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from scp_support import AE_TITLE, MODALITY, RunningScp, get, identifier, make_instance, query

from noctis.core.audit import AuditFilter, query_audit
from noctis.core.ingest import FacilityRef
from noctis.core.runtime import Runtime
from noctis.scp.server import Scp
from support import dcmtk
from support.archive import register_facility
from support.ports import LOOPBACK


def _events(runtime: Runtime, **where: object) -> list[tuple[str, str, str | None, dict]]:
    with runtime.sessions() as session:
        rows = query_audit(session, AuditFilter(**where), limit=1000)  # type: ignore[arg-type]
        return [(r.action, r.outcome, r.study_instance_uid, dict(r.detail or {})) for r in rows]


def test_stores_queries_and_retrievals_are_audited_per_study(
    scp: RunningScp, runtime: Runtime, facility: FacilityRef, tmp_path: Path
) -> None:
    study = "1.2.826.0.1.3680043.8.498.77"
    files = [make_instance(tmp_path / "in", StudyInstanceUID=study) for _ in range(3)]
    assert dcmtk.storescu(scp.port, files, calling=MODALITY, called=AE_TITLE).returncode == 0
    answers = query(scp.port, identifier("STUDY", StudyInstanceUID=study, PatientName=""))
    assert answers[-1][0] == 0x0000
    _, received = get(
        scp.port,
        identifier("STUDY", StudyInstanceUID=study),
        {CTImageStorage: [ExplicitVRLittleEndian]},
    )
    assert len(received) == 3

    events = _events(runtime, actor=MODALITY, actor_type="ae")
    stores = [e for e in events if e[0] == "store"]
    # One event for the three instances of the study, written when the association ended.
    assert [(e[1], e[2], e[3]["instances"]) for e in stores] == [("success", study, 3)]
    queries = [e for e in events if e[0] == "query"]
    assert queries and queries[0][2] == study and queries[0][3]["results"] == 1
    retrievals = [e for e in events if e[0] == "retrieve"]
    assert [(e[1], e[2], e[3]["completed"]) for e in retrievals] == [("success", study, 3)]


def test_a_refused_association_is_audited(scp: RunningScp, runtime: Runtime) -> None:
    result = dcmtk.echoscu(scp.port, calling="STRANGER", called=AE_TITLE)
    assert result.returncode != 0
    events = _events(runtime, actor="STRANGER")
    assert [(e[0], e[1], e[3]["reason"]) for e in events] == [("associate", "denied", "calling-ae")]


@pytest.mark.parametrize("runtime", ["embedded"], indirect=True)
def test_a_node_serving_some_facilities_refuses_the_others(
    runtime: Runtime, facility: FacilityRef
) -> None:
    register_facility(runtime, "north", [{"aeTitle": "NORTHCT"}])
    runtime.settings.scp_facilities = ["north"]
    node = Scp(runtime, host=LOOPBACK, port=0).start()
    try:
        assert dcmtk.echoscu(node.port, calling="NORTHCT", called=AE_TITLE).returncode == 0
        refused = dcmtk.echoscu(node.port, calling=MODALITY, called=AE_TITLE)
        assert refused.returncode != 0
    finally:
        node.stop(timeout=5)
    assert [e[3]["reason"] for e in _events(runtime, actor=MODALITY)] == ["facility-not-served"]


@pytest.fixture
def certificates(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed server certificate for 127.0.0.1, made for this test."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "noctis-test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def tls_scp(
    embedded_archive: Runtime, certificates: tuple[Path, Path]
) -> Iterator[tuple[Scp, Path]]:
    register_facility(embedded_archive, "st-mary", [{"aeTitle": MODALITY}])
    embedded_archive.settings.tls_cert_file, embedded_archive.settings.tls_key_file = certificates
    node = Scp(embedded_archive, host=LOOPBACK, port=0).start()
    yield node, certificates[0]
    node.stop(timeout=5)


def _echo(port: int, context: ssl.SSLContext | None) -> bool:
    ae = AE(ae_title=MODALITY)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    tls = (context, LOOPBACK) if context is not None else None
    assoc = ae.associate(LOOPBACK, port, ae_title=AE_TITLE, tls_args=tls)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return int(status.Status) == 0


def test_dicom_tls_accepts_tls_callers_only(tls_scp: tuple[Scp, Path]) -> None:
    node, certificate = tls_scp
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certificate))
    assert _echo(node.port, context)
    assert not _echo(node.port, None)  # plain DICOM to a TLS port gets no association


def test_a_silent_tls_connection_neither_blocks_others_nor_stays(
    tls_scp: tuple[Scp, Path],
) -> None:
    """The TLS handshake runs in the connection's own thread, within the request timeout: a
    peer that connects and says nothing does not stop the next caller from connecting."""
    node, certificate = tls_scp
    silent = socket.create_connection((LOOPBACK, node.port), timeout=5)
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certificate))
        assert _echo(node.port, context)
        # Answered while the silent peer is still held: the echo did not wait for its timeout.
        silent.setblocking(False)
        with pytest.raises(BlockingIOError):
            silent.recv(1)
        silent.settimeout(node.runtime.settings.association_request_timeout + 5)
        assert silent.recv(1) == b""  # closed by the server once the timeout passed
    finally:
        silent.close()
