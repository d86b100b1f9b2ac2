"""The error every reader of received DICOM bytes raises for input it refuses."""

from __future__ import annotations


class MalformedDicom(ValueError):
    """The bytes are not a DICOM data set the archive can index (a permanent problem: the
    same bytes sent again are refused again)."""
