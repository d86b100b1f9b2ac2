"""Who may associate, and what each association may do.

The facility registry decides, once per association, at A-ASSOCIATE-RQ time (pynetdicom's
EVT_REQUESTED, which runs before presentation contexts are negotiated and lets the handler send
the A-ASSOCIATE-RJ itself):

- a called AE title other than ours: rejected-permanent, service-user, called-AE-title-not-
  recognised;
- a calling AE title no enabled facility lists, or listed but calling from outside its allowed
  networks: rejected-permanent, service-user, calling-AE-title-not-recognised;
- the registry cannot be read (index down): rejected-transient, service-user, no-reason-given,
  so the modality retries later instead of giving up.

An accepted association carries its `Caller` (facility and allowed services); every handler
checks the service it serves against it and passes the facility to every query.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING

from pynetdicom import evt

from noctis.core.facilities import Caller, resolve_caller
from noctis.scp.metrics import get_metrics

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.events import Event

    from noctis.core.runtime import Runtime
    from noctis.scp.audit import DimseAudit

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4
REJECT_CALLING_AE = (0x01, 0x01, 0x03)  # permanent, service-user, calling AE not recognised
REJECT_CALLED_AE = (0x01, 0x01, 0x07)  # permanent, service-user, called AE not recognised
REJECT_TRANSIENT = (0x02, 0x01, 0x01)  # transient, service-user, no reason given


class AccessControl:
    """Resolves callers against the facility registry and remembers them per association."""

    def __init__(
        self,
        runtime: Runtime,
        ae_title: str,
        *,
        facilities: frozenset[str] = frozenset(),
        audit: DimseAudit | None = None,
    ) -> None:
        self.runtime = runtime
        self.ae_title = ae_title.strip()
        # A DicomNode may serve only some facilities (NOCTIS_SCP_FACILITIES); empty: all.
        self.facilities = facilities
        self.audit = audit
        self._callers: weakref.WeakKeyDictionary[Association, Caller] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def on_requested(self, event: Event) -> None:
        """EVT_REQUESTED: accept the caller (remember who it is) or reject the association."""
        assoc = event.assoc
        request = assoc.requestor.primitive
        calling = str(getattr(request, "calling_ae_title", "") or "").strip()
        called = str(getattr(request, "called_ae_title", "") or "").strip()
        address = str(assoc.requestor.address)
        if called != self.ae_title:
            log.warning(
                "rejected association from %s@%s: called AE %r is not %r",
                calling,
                address,
                called,
                self.ae_title,
            )
            self._reject(assoc, REJECT_CALLED_AE, "called-ae", calling, address)
            return
        try:
            with self.runtime.sessions() as session:
                caller = resolve_caller(session, calling, address)
        except Exception:
            log.exception("facility registry unavailable; rejecting %s@%s", calling, address)
            self._reject(assoc, REJECT_TRANSIENT, "registry-unavailable", calling, address)
            return
        if caller is None:
            log.warning(
                "rejected association: AE %r from %s is not registered for that address",
                calling,
                address,
            )
            self._reject(assoc, REJECT_CALLING_AE, "calling-ae", calling, address)
            return
        if self.facilities and caller.facility_name not in self.facilities:
            log.warning(
                "rejected association: AE %r of facility %r may not call this node (serves %s)",
                calling,
                caller.facility_name,
                ", ".join(sorted(self.facilities)),
            )
            self._reject(assoc, REJECT_CALLING_AE, "facility-not-served", calling, address)
            return
        with self._lock:
            self._callers[assoc] = caller

    def caller(self, assoc: Association) -> Caller | None:
        with self._lock:
            return self._callers.get(assoc)

    def allowed(self, assoc: Association, service: str) -> Caller | None:
        """The caller if it may use ``service`` (echo, store, find, move, get, commitment),
        else None."""
        caller = self.caller(assoc)
        if caller is None or service not in caller.services:
            return None
        return caller

    def _reject(
        self,
        assoc: Association,
        reason: tuple[int, int, int],
        label: str,
        calling: str,
        address: str,
    ) -> None:
        get_metrics().associations_rejected.labels(reason=label).inc()
        if self.audit is not None:
            self.audit.refused(calling, address, label)
        # Sending the reject marks the association rejected, so pynetdicom skips the
        # negotiation. Then do what pynetdicom does after its own rejections: kill() waits for
        # the DUL to send the A-ASSOCIATE-RJ before the connection is closed.
        assoc.acse.send_reject(*reason)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()
