"""C-STORE of stored instances to a destination AE, each in its own transfer syntax.

For every (SOP class, transfer syntax) of a batch the association proposes exactly that pair,
and for a compressed, deflated or big-endian syntax also the SOP class in explicit and implicit
little endian, so a destination that refuses the stored syntax can still be sent a decoded copy when
a codec allows it. An instance whose syntax the destination accepts travels as stored, byte
for byte (pynetdicom sends the data set of a Part 10 file without decoding it).

The only module of the worker that speaks DIMSE (see the import contracts in pyproject.toml).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.presentation import build_context

# pynetdicom's internals are touched in one place only, the SCP's compat module: its settings
# (send files as stored, no per-message logging) and the requestor that closes pynetdicom's
# race between a sender and its reactor (a response the reactor takes is dropped and the
# sender waits out the DIMSE timeout: 30 s stalls seen here under load). A documented
# exception to "processes never import each other" (pyproject.toml's contracts).
from noctis.scp.fast import compat
from noctis.scp.fast.requestor import requesting

log = logging.getLogger(__name__)

_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_LITTLE_ENDIAN = {str(u) for u in _UNCOMPRESSED}
MAX_CONTEXTS = 126  # of the 128 an association may propose (odd IDs 1..255)


@dataclass(frozen=True)
class Item:
    """One instance to send: its Part 10 file (spooled by the caller) and its syntax."""

    key: object  # the caller's handle, returned with the result
    sop_class_uid: str
    transfer_syntax_uid: str
    fetch: Callable[[], Path]  # the Part 10 file, fetched when it is about to be sent


@dataclass(frozen=True)
class Result:
    key: object
    sent: bool
    error: str = ""
    permanent: bool = False


class CannotAssociate(Exception):
    """The destination could not be reached or refused the association."""


def _contexts_for(pairs: Sequence[tuple[str, str]]) -> list[list[object]]:
    """Groups of presentation contexts, each within one association's limit."""
    groups: list[list[object]] = []
    current: list[object] = []
    for sop_class, syntax in pairs:
        wanted = [build_context(sop_class, [syntax])]
        if syntax not in _LITTLE_ENDIAN:  # compressed, deflated, big endian
            wanted.append(build_context(sop_class, list(_UNCOMPRESSED)))
        if len(current) + len(wanted) > MAX_CONTEXTS:
            groups.append(current)
            current = []
        current.extend(wanted)
    if current:
        groups.append(current)
    return groups


def send(
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str,
    items: Sequence[Item],
    *,
    timeout: float = 30.0,
    progress: Callable[[], None] | None = None,
) -> list[Result]:
    """Send every item; CannotAssociate when the first association cannot be made (nothing
    was sent then). ``progress`` is called after each item (to renew a claim's lease)."""
    compat.configure()
    pairs = list(dict.fromkeys((i.sop_class_uid, i.transfer_syntax_uid) for i in items))
    results: list[Result] = []
    for number, contexts in enumerate(_contexts_for(pairs)):
        proposed = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in contexts}
        batch = [i for i in items if (i.sop_class_uid, i.transfer_syntax_uid) in proposed]
        ae = AE(ae_title=calling_ae)
        ae.maximum_pdu_size = 0
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        assoc = requesting(
            ae.associate(
                host,
                port,
                contexts=contexts,
                ae_title=called_ae,
                evt_handlers=[(evt.EVT_CONN_OPEN, _no_delay)],
            )
        )
        if not assoc.is_established and assoc.rejected_contexts and not assoc.accepted_contexts:
            # The destination answered and refused every proposed context (pynetdicom then
            # aborts): these instances can never go there, and the destination is not down.
            results.extend(_not_accepted(item) for item in batch)
            continue
        if not assoc.is_established:
            why = (
                "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "no answer"
            )
            reason = f"no association with {called_ae} at {host}:{port} ({why})"
            if number == 0:
                raise CannotAssociate(reason)
            results.extend(Result(i.key, False, reason) for i in batch)
            continue
        try:
            results.extend(_send_batch(assoc, batch, progress))
        finally:
            if assoc.is_established:
                assoc.release()
    return results


def _no_delay(event: evt.Event) -> None:
    """Nagle's algorithm off: with it each C-STORE waits ~40 ms for the peer's delayed ACK
    (38 instances/s instead of several hundred on loopback)."""
    sock = event.assoc.dul.socket
    if sock is not None and sock.socket is not None:
        sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _send_batch(
    assoc: Association, batch: Sequence[Item], progress: Callable[[], None] | None
) -> list[Result]:
    accepted = {
        (str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts
    }
    results: list[Result] = []
    for index, item in enumerate(batch):
        if not assoc.is_established:
            results.extend(
                Result(rest.key, False, "the association ended before it was sent")
                for rest in batch[index:]
            )
            break
        results.append(_send_one(assoc, accepted, item, index))
        if progress is not None:
            progress()
    return results


def _send_one(assoc: Association, accepted: set[tuple[str, str]], item: Item, index: int) -> Result:
    sop_class, syntax = item.sop_class_uid, item.transfer_syntax_uid
    as_stored = (sop_class, syntax) in accepted
    if not as_stored and not any((sop_class, str(u)) in accepted for u in _UNCOMPRESSED):
        return _not_accepted(item)
    try:
        path = item.fetch()
    except Exception as exc:
        return Result(item.key, False, f"cannot read the stored instance: {exc}")
    try:
        if as_stored:
            dataset: object = path
        else:
            try:
                dataset = _decoded(path, syntax)
            except Exception as exc:
                return Result(
                    item.key,
                    False,
                    f"the destination does not accept transfer syntax {syntax} for SOP class "
                    f"{sop_class}, and it cannot be converted: {type(exc).__name__}: {exc}",
                    permanent=True,
                )
        answer = assoc.send_c_store(dataset, msg_id=index % 0xFFFF + 1)  # type: ignore[arg-type]
    except Exception as exc:  # pynetdicom raises RuntimeError, ValueError, OSError...
        return Result(item.key, False, f"C-STORE failed: {type(exc).__name__}: {exc}")
    finally:
        path.unlink(missing_ok=True)
    if "Status" not in answer:
        return Result(item.key, False, "no C-STORE response (timeout or abort)")
    code = int(answer.Status)
    if code == 0x0000 or 0xB000 <= code <= 0xBFFF:
        return Result(item.key, True)
    comment = str(answer.get("ErrorComment", "") or "")
    return Result(item.key, False, f"C-STORE status 0x{code:04X} {comment}".strip())


def _not_accepted(item: Item) -> Result:
    return Result(
        item.key,
        False,
        f"the destination accepts SOP class {item.sop_class_uid} in no transfer syntax we can "
        f"send (stored as {item.transfer_syntax_uid})",
        permanent=True,
    )


def _decoded(path: Path, syntax: str) -> object:
    """The data set with its pixel data decoded, for a destination that refuses the stored
    (compressed) syntax; pynetdicom encodes it in the accepted uncompressed syntax."""
    ds = dcmread(path)
    if str(syntax) == "1.2.840.10008.1.2.2":
        raise ValueError("big endian data sets are sent only as stored")
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        # Decoding adds no loss of its own: the instance keeps its SOP Instance UID.
        ds.decompress(generate_instance_uid=False)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds
