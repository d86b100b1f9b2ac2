"""Helpers for the routing tests: an archive with a facility whose peers are destinations,
routes applied as `noctis route apply` does, progress read back, and a pynetdicom storage SCP
that refuses chosen instances (dcmtk's storescp cannot be told to refuse)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt
from pynetdicom.transport import ThreadedAssociationServer

from noctis.core.ingest import FacilityRef
from noctis.core.routing import apply_route
from noctis.core.runtime import Runtime
from noctis.core.transfers import progress
from noctis.index.routing import Transfer
from noctis.specs.route import RouteSpec
from support.archive import register_facility
from support.dcmtk import StoreSCP
from support.dicomdata import dataset_bytes, sop_instance_uid
from support.ports import free_port

LOOPBACK = "127.0.0.1"


def facility_with_destinations(
    runtime: Runtime, name: str, destinations: Mapping[str, int]
) -> FacilityRef:
    """Facility ``name`` with a modality (MODALITY) and the destinations (AE title -> port)."""
    aes: list[dict[str, Any]] = [{"aeTitle": "MODALITY"}]
    aes += [{"aeTitle": ae, "host": LOOPBACK, "port": port} for ae, port in destinations.items()]
    return register_facility(runtime, name, aes)


def add_route(runtime: Runtime, name: str, **spec: Any) -> None:
    with runtime.sessions.begin() as session:
        apply_route(session, name, RouteSpec.model_validate(spec))


def route_progress(runtime: Runtime) -> dict[str, dict[str, Any]]:
    """Destination -> its counts (pending, sent, failed, dead, lastError), over all routes."""
    with runtime.sessions() as session:
        table = progress(session)
    merged: dict[str, dict[str, Any]] = {}
    for entries in table.values():
        for entry in entries:
            merged[entry.destination] = entry.as_dict()
    return merged


def attempts(runtime: Runtime) -> dict[str, int]:
    """SOP Instance UID -> attempts, over every transfer."""
    with runtime.sessions() as session:
        return {row.sop_instance_uid: row.attempts for row in session.query(Transfer).all()}


def received_uids(scp: StoreSCP) -> list[str]:
    """The SOP Instance UIDs storescp wrote (its files are named <modality>.<uid>)."""
    return [path.name.split(".", 1)[1] for path in scp.files()]


class RefusingSCP:
    """A storage SCP (pynetdicom) that answers ``status`` to the instances ``refuse`` picks
    and stores the rest (in memory: SOP Instance UID -> data set bytes)."""

    def __init__(
        self,
        ae_title: str,
        refuse: Callable[[str], bool],
        status: int = 0xA700,
        delay: float = 0.0,
        contexts: dict[str, list[str]] | None = None,
    ) -> None:
        self.ae_title = ae_title
        self.refuse = refuse
        self.status = status
        self.delay = delay
        # SOP class -> the transfer syntaxes accepted for it (default: every storage SOP
        # class in every syntax)
        self.contexts = contexts
        self.port = free_port()
        self.received: dict[str, bytes] = {}
        self.syntaxes: dict[str, str] = {}  # the transfer syntax each arrived in
        self.answered: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None

    def _on_store(self, event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        if self.delay:
            threading.Event().wait(self.delay)
        code = self.status if self.refuse(uid) else 0x0000
        with self._lock:
            self.answered.append((uid, code))
            if code == 0:
                self.received[uid] = _received_data_set(event)
                self.syntaxes[uid] = str(event.context.transfer_syntax)
        return code

    def start(self) -> RefusingSCP:
        ae = AE(ae_title=self.ae_title)
        if self.contexts is None:
            for context in StoragePresentationContexts:
                ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        else:
            for sop_class, syntaxes in self.contexts.items():
                ae.add_supported_context(sop_class, syntaxes)
        self._server = ae.start_server(
            (LOOPBACK, self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


def dataset_bytes_by_uid(files: Iterable[Path]) -> dict[str, bytes]:
    """SOP Instance UID -> the file's data set bytes (what a destination must receive)."""
    return {sop_instance_uid(path): dataset_bytes(path) for path in files}


def _received_data_set(event: Any) -> bytes:
    """The C-STORE data set as the peer encoded it. pynetdicom's receive mode is process-wide:
    once an SCP of the archive ran in this process (an earlier test), data sets arrive spooled
    to a Part 10 file (``event.dataset_path``) and ``encoded_dataset`` is empty."""
    try:
        path = event.dataset_path  # None, or missing, when pynetdicom received it in memory
    except AttributeError:
        path = None
    if path is None:
        return bytes(event.encoded_dataset(include_meta=False))
    return _without_file_meta(Path(path).read_bytes())


def _without_file_meta(part10: bytes) -> bytes:
    """The data set of a Part 10 file: after the preamble, 'DICM' and the group 0002 elements
    (explicit VR little endian, PS3.10 7.1)."""
    offset = 132
    while part10[offset : offset + 2] == b"\x02\x00":
        vr = part10[offset + 4 : offset + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            length = int.from_bytes(part10[offset + 8 : offset + 12], "little")
            offset += 12 + length
        else:
            length = int.from_bytes(part10[offset + 6 : offset + 8], "little")
            offset += 8 + length
    return part10[offset:]
