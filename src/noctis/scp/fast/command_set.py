"""DIMSE command sets and P-DATA-TF PDUs, read and written directly (PS3.7 9.3, PS3.8 9.3.5).

The direct C-STORE path (`noctis.scp.fast.direct_store`) reads each request's command set and writes
its response itself: through pydicom and pynetdicom's message classes the two took about 0.5 ms
a message, a tenth of a small instance's round trip; C-FIND (`noctis.scp.find`) writes its
responses here too, one for every match. A command set is a short list of group 0000 elements
in implicit VR little endian; only the C-STORE-RQ fields the archive uses are read, and
anything this reader does not recognise as a well-formed C-STORE-RQ is left to pynetdicom.
The response bytes are the same as pynetdicom's (tests compare them).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_FIND_RSP = 0x8020
NO_DATA_SET = 0x0101  # CommandDataSetType: no data set follows
DATA_SET = 0x0001  # CommandDataSetType as pynetdicom writes it when one follows

_ELEMENT_HEADER = struct.Struct("<HHI")  # group, element, length (implicit VR LE)
_US = struct.Struct("<H")
_UL = struct.Struct("<I")
PDU_HEADER = struct.Struct(">BBI")  # type, reserved, length
PDV_HEADER = struct.Struct(">IBB")  # item length, context ID, message control header
P_DATA_TF = 0x04
DATA_FRAGMENT = 0x00  # message control header: data set, more fragments follow
LAST_DATA_FRAGMENT = 0x02  # message control header: data set, last fragment
COMMAND_FRAGMENT = 0x01  # message control header: command, more fragments follow
LAST_COMMAND_FRAGMENT = 0x03  # message control header: command, last fragment


@dataclass(frozen=True)
class StoreRequest:
    message_id: int
    sop_class_uid: str
    sop_instance_uid: str


def read_store_request(command: bytes | memoryview) -> StoreRequest | None:
    """The C-STORE-RQ in ``command`` (a complete command set), or None if it is anything else:
    another command, no data set announced, a field missing or the encoding broken."""
    values: dict[int, bytes] = {}
    offset, end = 0, len(command)
    while offset < end:
        if end - offset < _ELEMENT_HEADER.size:
            return None
        group, element, length = _ELEMENT_HEADER.unpack_from(command, offset)
        offset += _ELEMENT_HEADER.size
        if group != 0x0000 or length > end - offset:
            return None
        values[element] = bytes(command[offset : offset + length])
        offset += length
    try:
        field = _US.unpack(values[0x0100])[0]
        message_id = _US.unpack(values[0x0110])[0]
        data_set_type = _US.unpack(values[0x0800])[0]
        sop_class = _uid(values[0x0002])
        sop_instance = _uid(values[0x1000])
    except (KeyError, struct.error, UnicodeDecodeError):
        return None
    if field != C_STORE_RQ or data_set_type == NO_DATA_SET or not sop_class or not sop_instance:
        return None
    return StoreRequest(message_id, sop_class, sop_instance)


def store_response(request: StoreRequest, status: int, comment: str | None = None) -> bytes:
    """The C-STORE-RSP command set answering ``request``."""
    return _response(
        C_STORE_RSP,
        request.message_id,
        request.sop_class_uid,
        status,
        comment=comment,
        sop_instance_uid=request.sop_instance_uid,
    )


def find_response(
    message_id: int,
    sop_class_uid: str,
    status: int,
    *,
    has_identifier: bool = False,
    comment: str | None = None,
) -> bytes:
    """A C-FIND-RSP command set: pending with an identifier to follow, or final."""
    return _response(
        C_FIND_RSP,
        message_id,
        sop_class_uid,
        status,
        has_data=has_identifier,
        comment=comment,
    )


def _response(
    command_field: int,
    message_id: int,
    sop_class_uid: str,
    status: int,
    *,
    has_data: bool = False,
    comment: str | None = None,
    sop_instance_uid: str | None = None,
) -> bytes:
    elements = [
        _element(0x0002, _padded_uid(sop_class_uid)),
        _element(0x0100, _US.pack(command_field)),
        _element(0x0120, _US.pack(message_id)),
        _element(0x0800, _US.pack(DATA_SET if has_data else NO_DATA_SET)),
        _element(0x0900, _US.pack(status)),
    ]
    if comment:
        text = comment.encode("ascii", "replace")[:64]
        elements.append(_element(0x0902, text + b" " * (len(text) % 2)))
    if sop_instance_uid is not None:
        elements.append(_element(0x1000, _padded_uid(sop_instance_uid)))
    body = b"".join(elements)
    return _element(0x0000, _UL.pack(len(body))) + body


def command_pdus(context_id: int, command: bytes, peer_max_pdu: int) -> bytes:
    """The P-DATA-TF PDUs carrying ``command``: one, unless the peer's maximum PDU length
    (0: unlimited) asks for smaller fragments."""
    return _pdus(context_id, command, peer_max_pdu, COMMAND_FRAGMENT, LAST_COMMAND_FRAGMENT)


def data_set_pdus(context_id: int, data_set: bytes, peer_max_pdu: int) -> bytes:
    """The P-DATA-TF PDUs carrying an encoded data set (a C-FIND identifier)."""
    return _pdus(context_id, data_set, peer_max_pdu, DATA_FRAGMENT, LAST_DATA_FRAGMENT)


def _pdus(context_id: int, data: bytes, peer_max_pdu: int, more: int, last: int) -> bytes:
    room = max(len(data), 1) if peer_max_pdu == 0 else max(peer_max_pdu - PDV_HEADER.size, 1)
    pdus = []
    for start in range(0, max(len(data), 1), room):
        fragment = data[start : start + room]
        control = last if start + room >= len(data) else more
        item = PDV_HEADER.pack(len(fragment) + 2, context_id, control) + fragment
        pdus.append(PDU_HEADER.pack(P_DATA_TF, 0, len(item)) + item)
    return b"".join(pdus)


def _element(element: int, value: bytes) -> bytes:
    return _ELEMENT_HEADER.pack(0x0000, element, len(value)) + value


def _padded_uid(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\0" * (len(raw) % 2)


def _uid(raw: bytes) -> str:
    return raw.decode("ascii").rstrip("\0 ")
