"""Where Noctis plugs into pynetdicom's acceptor: `accept` upgrades each association before it
starts (`noctis.scp.listener.NoctisServer` calls it).

Always, `AcceptedAssociation` answers C-GET and C-MOVE itself (`noctis.scp.retrieve`), so
retrieved instances are sent as the bytes stored: pynetdicom's Query/Retrieve service class
decodes every instance into a Dataset and encodes it again. It answers storage commitment
N-ACTIONs itself too (`noctis.scp.commitment`): the N-EVENT-REPORT that follows the response
may go out on the same association. With the fast path
(``NOCTIS_SCP_FAST_PATH``, the default) also:

- both of the association's threads are event-driven (`noctis.scp.fast.reactor`) instead of
  polling every millisecond, and its DUL thread receives C-STORE requests itself
  (`noctis.scp.fast.direct_store`);
- C-FIND is answered by `noctis.scp.find.serve_find`, its many responses encoded and sent in
  batches (the Modality Worklist's too, from `noctis.scp.modality_worklist`).

Every other request, and all of them with the fast path off, go to pynetdicom's service
classes and from there to the SCP's event handlers (`noctis.scp.handlers`).
"""

from __future__ import annotations

import threading
from typing import Any

from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE, N_ACTION

from noctis.scp.commitment import serve_commitment
from noctis.scp.contexts import (
    FIND_MODELS,
    GET_MODELS,
    MOVE_MODELS,
    STORAGE_COMMITMENT_PUSH_MODEL,
)
from noctis.scp.fast import compat
from noctis.scp.fast.direct_store import DirectStore
from noctis.scp.fast.reactor import EventDrivenDUL, SignallingQueue, serve_until_done
from noctis.scp.find import serve_find
from noctis.scp.modality_worklist import MODALITY_WORKLIST_FIND, worklist_answers
from noctis.scp.retrieve import serve_retrieve
from noctis.scp.scp_context import ScpContext

_RETRIEVE_MODELS = frozenset({*GET_MODELS, *MOVE_MODELS})
_FAST_FIND_MODELS = frozenset({*FIND_MODELS, MODALITY_WORKLIST_FIND})


def accept(assoc: Association, scp_context: ScpContext) -> None:
    """Upgrade a new acceptor association (made, not started) for ``scp_context``."""
    wake: threading.Event | None = None
    if scp_context.fast_path:
        wake = threading.Event()  # set when a DIMSE message or an ACSE primitive arrives
        dul = compat.become(assoc.dul, EventDrivenDUL)
        dul.install_wake_up(wake.set)
        dul.install_direct_store(DirectStore(assoc, scp_context, dul.send_bytes))
        assoc.dimse.msg_queue = SignallingQueue(wake.set)
    accepted = compat.become(assoc, AcceptedAssociation)
    accepted.scp_context = scp_context
    accepted.wake = wake


class AcceptedAssociation(compat.AssociationHooks):
    scp_context: ScpContext
    wake: threading.Event | None  # None: pynetdicom's own reactors (the fast path is off)
    # Message IDs of C-CANCEL-RQs that came for the request being served before the reactor
    # got to it: pynetdicom forgets those before it serves a request; handlers look here too.
    cancelled_early: frozenset[int] = frozenset()

    def reactor_loop(self) -> None:
        if self.wake is None:
            super().reactor_loop()
        else:
            serve_until_done(self, self.wake)

    def serve_request(self, msg: Any, context_id: int) -> None:
        context = compat.accepted_context(self, context_id)
        if not msg.is_valid_request or context is None or compat.release_sent(self):
            super().serve_request(msg, context_id)  # pynetdicom's warning, or its abort
            return
        model = str(context.abstract_syntax)
        message_id = getattr(msg, "MessageID", None)
        self.cancelled_early = frozenset(k for k in self.dimse.cancel_req if k == message_id)
        if isinstance(msg, C_FIND) and self.wake is not None and model in _FAST_FIND_MODELS:
            # C-CANCELs are tracked per request, as pynetdicom's _serve_request does, except
            # that one for this very request, come in before its turn, still cancels it.
            self.dimse.cancel_req = {
                key: value for key, value in self.dimse.cancel_req.items() if key == msg.MessageID
            }
            source = worklist_answers if model == MODALITY_WORKLIST_FIND else None
            try:
                serve_find(self, msg, context, self.scp_context, source)
            finally:
                self.dimse.cancel_req = {}
            return
        if isinstance(msg, C_GET | C_MOVE) and model in _RETRIEVE_MODELS:
            # What pynetdicom's _serve_request does around a service class, so sub-operation
            # C-STOREs can pause the reactor and C-CANCELs are tracked per request.
            self.dimse.cancel_req = {}
            try:
                with compat.reactor_paused(self):
                    serve_retrieve(self, msg, context, self.scp_context)
            finally:
                self.dimse.cancel_req = {}
            return
        if isinstance(msg, N_ACTION) and model == STORAGE_COMMITMENT_PUSH_MODEL:
            # The N-EVENT-REPORT may go out on this association, its response read here.
            self.dimse.cancel_req = {}
            with compat.reactor_paused(self):
                serve_commitment(self, msg, context, self.scp_context)
            return
        super().serve_request(msg, context_id)
