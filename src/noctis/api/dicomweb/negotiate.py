"""Content negotiation for WADO-RS: which representation of instances and frames to send.

Defaults (PS3.18 8.7): ``transfer-syntax=*`` (and no Accept, or ``*/*``) means "as stored";
``application/octet-stream`` frames without a transfer syntax, or with explicit VR little
endian, mean native pixels, decoded if the stored frames are compressed. Instances are sent as
stored unless the client names explicit VR little endian for one stored otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from noctis.api.dicomweb.multipart import MediaType
from noctis.dicom.transcode import EXPLICIT_VR_LITTLE_ENDIAN, NATIVE_SYNTAXES

OCTET_STREAM = "application/octet-stream"
DICOM = "application/dicom"

# The media type of a compressed frame, by transfer syntax (PS3.18 Table 8.7.3-2).
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}


@dataclass(frozen=True)
class FramePlan:
    part_type: str  # the ``type`` of the multipart response and of each part
    transfer_syntax: str  # of the frames sent
    decode: bool  # compressed frames are decoded to native pixels


def plan_frames(ranges: list[MediaType], stored: str) -> FramePlan | None:
    """How to send frames stored in ``stored``; None when nothing acceptable can be sent."""
    native = stored in NATIVE_SYNTAXES
    as_stored = EXPLICIT_VR_LITTLE_ENDIAN if native else stored
    stored_media = OCTET_STREAM if native else FRAME_MEDIA_TYPES.get(stored, OCTET_STREAM)
    for media in ranges:
        part_type, syntax = media.type, None
        if media.type == "multipart/related":
            part_type = media.param("type", OCTET_STREAM) or OCTET_STREAM
            part_type = _ALIASES.get(part_type.lower(), part_type.lower())
            syntax = media.param("transfer-syntax")
        elif media.type not in ("*/*", "multipart/*"):
            continue  # single-part frame responses are not offered
        if part_type in ("*/*", "*"):
            return FramePlan(stored_media, as_stored, False)
        if part_type == OCTET_STREAM:
            if syntax == "*" or (syntax == stored and not native):
                return FramePlan(OCTET_STREAM, as_stored, False)
            if syntax in (None, EXPLICIT_VR_LITTLE_ENDIAN) or (
                native and syntax in NATIVE_SYNTAXES
            ):
                return FramePlan(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN, not native)
            continue
        if native:
            continue  # native frames are never re-compressed
        if part_type in (stored_media, "image/*") and syntax in (None, "*", stored):
            return FramePlan(stored_media, stored, False)
    return None


@dataclass(frozen=True)
class InstancePlan:
    single_part: bool  # a bare application/dicom body (one instance, client asked for that)
    transfer_syntax: str | None  # None: as stored; else the syntax every instance is sent in


def plan_instances(ranges: list[MediaType], stored: set[str]) -> InstancePlan | None:
    for media in ranges:
        if media.type in ("*/*", "multipart/*"):
            return InstancePlan(False, None)
        if media.type == DICOM and len(stored) == 1:
            syntax = media.param("transfer-syntax")
            if syntax in (None, "*") or syntax in stored:
                return InstancePlan(True, None)
            continue
        if media.type != "multipart/related":
            continue
        part_type = (media.param("type", DICOM) or DICOM).lower()
        if part_type not in (DICOM, "*/*", "application/*"):
            continue
        syntax = media.param("transfer-syntax")
        if syntax in (None, "*") or stored == {syntax}:
            return InstancePlan(False, None)
        if syntax == EXPLICIT_VR_LITTLE_ENDIAN:
            return InstancePlan(False, EXPLICIT_VR_LITTLE_ENDIAN)
    return None


def plan_image(ranges: list[MediaType], query_accept: str | None) -> str | None:
    """The rendered media type: image/jpeg (default) or image/png."""
    from noctis.api.dicomweb.multipart import parse_accept

    if query_accept:
        ranges = parse_accept(query_accept)
    for media in ranges:
        if media.type in ("image/jpeg", "image/png"):
            return media.type
        if media.type in ("*/*", "image/*"):
            return "image/jpeg"
    return None
