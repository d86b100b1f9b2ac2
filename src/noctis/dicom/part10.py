"""The head of a DICOM Part 10 file (PS3.10 7.1): preamble, "DICM" and the File Meta Information.

Encoded directly: it is written for every received instance, and building it through a pydicom
FileMetaDataset (validation, element objects, the generic writer) was a noticeable share of
each small instance's receive. Same bytes as pydicom writes for the same values.
"""

from __future__ import annotations

import struct

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

PREAMBLE = b"\x00" * 128 + b"DICM"


def _element(group_element: tuple[int, int], vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element (short-length VRs: UI, SH, UL)."""
    return struct.pack("<HH2sH", *group_element, vr, len(value)) + value


def _ui(value: str) -> bytes:
    encoded = value.encode("ascii")
    return encoded + b"\x00" if len(encoded) % 2 else encoded


def _sh(value: str) -> bytes:
    encoded = value.encode("ascii")
    return encoded + b" " if len(encoded) % 2 else encoded


def file_meta(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    *,
    implementation_class_uid: str = PYNETDICOM_IMPLEMENTATION_UID,
    implementation_version_name: str = PYNETDICOM_IMPLEMENTATION_VERSION,
) -> bytes:
    """The File Meta Information group (0002), group length first."""
    body = b"".join(
        (
            # (0002,0001) File Meta Information Version, OB: a 4-byte length form.
            struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01",
            _element((0x0002, 0x0002), b"UI", _ui(sop_class_uid)),
            _element((0x0002, 0x0003), b"UI", _ui(sop_instance_uid)),
            _element((0x0002, 0x0010), b"UI", _ui(transfer_syntax_uid)),
            _element((0x0002, 0x0012), b"UI", _ui(implementation_class_uid)),
            _element((0x0002, 0x0013), b"SH", _sh(implementation_version_name)),
        )
    )
    return _element((0x0002, 0x0000), b"UL", struct.pack("<I", len(body))) + body


def part10_head(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """Preamble, prefix and File Meta Information: what precedes the data set in a file."""
    return PREAMBLE + file_meta(sop_class_uid, sop_instance_uid, transfer_syntax_uid)
