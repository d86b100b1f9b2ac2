"""The errors readers of DICOM bytes raise: for input refused, and for stored objects
that cannot be answered from."""

from __future__ import annotations


class MalformedDicom(ValueError):
    """The bytes are not a DICOM data set the archive can index (a permanent problem: the
    same bytes sent again are refused again)."""


class FrameError(ValueError):
    """The frame cannot be produced (no pixel data, bad frame number, corrupt encoding)."""


class StoredObjectDamaged(OSError):
    """The stored object cannot be read as the index says it can (cut short, a corrupt
    deflated stream): the archive's fault, never a short or wrong answer to the client."""


class StoredObjectTruncated(StoredObjectDamaged):
    """The stored object is shorter than the index or its own Pixel Data element says: the
    archive's fault (a damaged object or store), never a short answer to the client."""
