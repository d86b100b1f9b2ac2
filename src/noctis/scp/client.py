"""A small DICOM client: C-ECHO, and C-STORE of files each in its own transfer syntax.

`store_files` proposes exactly each file's (SOP class, transfer syntax) and sends the file's
data set bytes as they are (pynetdicom's chunked send), so a compressed file travels compressed
and what arrives is byte for byte what was on disk. Used by ``noctis upload`` and the tests.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE
from pynetdicom.association import Association

from noctis.scp.contexts import VERIFICATION, requested_storage_contexts
from noctis.scp.fast import compat
from noctis.scp.fast.requestor import requesting

log = logging.getLogger(__name__)

NO_ASSOCIATION = -1  # echo's answer when no association could be established


@dataclass
class StoreReport:
    succeeded: int = 0
    failed: int = 0
    failures: list[tuple[Path, str]] = field(default_factory=list)
    statuses: dict[Path, int] = field(default_factory=dict)  # the peer's status per file sent

    def _fail(self, path: Path, reason: str) -> None:
        self.failed += 1
        self.failures.append((path, reason))


def echo(
    host: str,
    port: int,
    called_ae: str = "NOCTIS",
    calling_ae: str = "NOCTISCLI",
    *,
    timeout: float = 30.0,
) -> int:
    """The C-ECHO status, or NO_ASSOCIATION if the peer rejected or could not be reached."""
    compat.configure()
    ae = _ae(calling_ae, timeout)
    ae.add_requested_context(VERIFICATION)
    assoc = requesting(ae.associate(host, port, ae_title=called_ae))
    if not assoc.is_established:
        log.warning(
            "C-ECHO: no association with %s at %s:%d (%s)", called_ae, host, port, _why(assoc)
        )
        return NO_ASSOCIATION
    try:
        answer = assoc.send_c_echo()
        return int(answer.Status) if "Status" in answer else NO_ASSOCIATION
    finally:
        _close(assoc)


def store_files(
    host: str,
    port: int,
    files: Iterable[Path],
    called_ae: str = "NOCTIS",
    calling_ae: str = "NOCTISCLI",
    *,
    timeout: float = 60.0,
) -> StoreReport:
    """C-STORE every file; a file that cannot be read or sent is reported, not raised."""
    compat.configure()
    report = StoreReport()
    described: list[tuple[Path, tuple[str, str]]] = []
    for path in files:
        path = Path(path)
        try:
            described.append((path, _sop_class_and_syntax(path)))
        except (OSError, ValueError, InvalidDicomError) as exc:
            report._fail(path, f"not a DICOM Part 10 file: {exc}")
    for contexts in requested_storage_contexts((pair for _, pair in described), fallback=False):
        covered = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in contexts}
        batch = [path for path, pair in described if pair in covered]
        ae = _ae(calling_ae, timeout)
        assoc = requesting(ae.associate(host, port, ae_title=called_ae, contexts=contexts))
        if not assoc.is_established:
            reason = f"no association with {called_ae} at {host}:{port} ({_why(assoc)})"
            for path in batch:
                report._fail(path, reason)
            continue
        try:
            _send(assoc, batch, report)
        finally:
            _close(assoc)
    return report


def _send(assoc: Association, batch: Sequence[Path], report: StoreReport) -> None:
    for index, path in enumerate(batch):
        if not assoc.is_established:
            for rest in batch[index:]:
                report._fail(rest, "association ended before it was sent")
            return
        try:
            answer = assoc.send_c_store(path, msg_id=index % 0xFFFF + 1)
        except (ValueError, AttributeError, OSError) as exc:
            report._fail(path, str(exc))
            continue
        if "Status" not in answer:
            report._fail(path, "no response (timeout or abort)")
            continue
        code = int(answer.Status)
        report.statuses[path] = code
        if code == 0x0000 or 0xB000 <= code <= 0xBFFF:
            report.succeeded += 1
        else:
            comment = str(answer.get("ErrorComment", "") or "")
            report._fail(path, f"status 0x{code:04X} {comment}".strip())


def _sop_class_and_syntax(path: Path) -> tuple[str, str]:
    meta = read_file_meta_info(path)
    sop_class = str(meta.get("MediaStorageSOPClassUID", "") or "")
    syntax = str(meta.get("TransferSyntaxUID", "") or "")
    if not sop_class or not syntax:
        raise ValueError("file meta lacks the SOP class or transfer syntax")
    return sop_class, syntax


def _ae(calling_ae: str, timeout: float) -> AE:
    ae = AE(ae_title=calling_ae)
    ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    return ae


def _why(assoc: Association) -> str:
    if assoc.is_rejected:
        return "rejected"
    if assoc.is_aborted:
        return "aborted"
    return "no answer"


def _close(assoc: Association) -> None:
    if assoc.is_established:
        assoc.release()
