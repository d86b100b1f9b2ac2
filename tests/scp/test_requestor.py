"""The race `noctis.scp.fast.requestor` closes, played out on a real (unconnected) association."""

from __future__ import annotations

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE

from noctis.scp.fast.requestor import requesting


def _association() -> Association:
    ae = AE(ae_title="NOCTIS")
    return requesting(Association(ae, mode="requestor"))


def _response() -> C_STORE:
    response = C_STORE()
    response.MessageIDBeingRespondedTo = 1
    response.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    response.AffectedSOPInstanceUID = "1.2.3"
    response.Status = 0x0000
    return response


def test_a_response_the_reactor_takes_while_a_sender_waits_goes_back_to_the_sender() -> None:
    assoc = _association()
    response = _response()
    assoc._reactor_checkpoint.clear()  # send_c_store holds the reactor
    assoc._serve_request(response, 1)  # ...which took the response anyway
    assert assoc.dimse.get_msg(block=False) == (1, response)


def test_a_response_nobody_waits_for_is_dropped_as_before() -> None:
    assoc = _association()
    assoc._reactor_checkpoint.set()
    assoc._serve_request(_response(), 1)
    assert assoc.dimse.get_msg(block=False) == (None, None)
