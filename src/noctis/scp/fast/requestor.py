"""Associations Noctis requests (C-MOVE sub-operations, `noctis upload`): pynetdicom's, with
one race closed.

pynetdicom's ``send_c_store`` clears the reactor's checkpoint, waits until the reactor says it
is paused, sends the request and takes the response from the message queue. The reactor sets
"paused" just before it waits at the checkpoint, so a sender can see "paused" while the
reactor is already past a checkpoint that was still open; if the response then arrives before
the reactor's next look at the queue (a loaded process: the reactor thread waits for the GIL),
the reactor takes it, logs "Received unexpected C-STORE service message" and drops it, and the
sender waits out the DIMSE timeout (60 s) and counts a failed sub-operation. Here a response
the reactor takes while a sender holds the checkpoint goes back to the queue, for the sender.
"""

from __future__ import annotations

from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association

from noctis.scp.fast import compat


class RequestingAssociation(compat.AssociationHooks):
    def serve_request(self, msg: Any, context_id: int) -> None:
        if not msg.is_valid_request and compat.checkpoint_held(self):
            self.dimse.msg_queue.put((context_id, msg))  # a sender is waiting for it
            return
        super().serve_request(msg, context_id)


def requesting(assoc: Association) -> Association:
    """``assoc`` (just associated, nothing sent yet) with the race closed, and a sender woken
    when the connection ends."""
    assoc.bind(evt.EVT_ABORTED, _wake_sender)
    assoc.bind(evt.EVT_CONN_CLOSE, _wake_sender)
    return compat.become(assoc, RequestingAssociation)


def _wake_sender(event: Any) -> None:
    # What DIMSEServiceProvider.get_msg returns after a timeout: "no message".
    event.assoc.dimse.msg_queue.put((None, None))
