"""Object keys: where an instance's bytes live in the object store."""

from __future__ import annotations


def instance_key(facility: str, study_uid: str, series_uid: str, sop_uid: str, sha256: str) -> str:
    # The content hash in the key makes every distinct content a distinct object, so a
    # replacement is written beside the old object and the index switches atomically.
    return f"{facility}/{study_uid}/{series_uid}/{sop_uid}.{sha256[:16]}.dcm"
