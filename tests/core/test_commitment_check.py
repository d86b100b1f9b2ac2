"""The storage commitment check: an instance is committed only when its index row (in the
asking facility, with the referenced SOP Class) and its stored object are both there."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

from noctis.core.commitment import (
    CLASS_INSTANCE_CONFLICT,
    NO_SUCH_OBJECT_INSTANCE,
    PROCESSING_FAILURE,
    Reference,
    check_commitment,
)
from noctis.core.ingest import FacilityRef
from noctis.core.runtime import Runtime
from support.archive import indexed_objects, register_facility
from support.incoming import ingest_file


def test_each_reference_gets_its_outcome_in_request_order(
    runtime: Runtime, default_facility: FacilityRef, make_dicom: Callable[..., Path]
) -> None:
    ours = [
        str(ingest_file(runtime, default_facility, make_dicom()).header.sop_instance_uid)
        for _ in range(3)
    ]
    other = register_facility(runtime, "elsewhere", [{"aeTitle": "ELSEWHERE"}])
    theirs = str(ingest_file(runtime, other, make_dicom()).header.sop_instance_uid)
    runtime.store.delete(indexed_objects(runtime)[ours[2]])
    # More than one IN (...) batch of the index query, mostly never received.
    missing = [generate_uid() for _ in range(1200)]
    references = [
        Reference(CTImageStorage, ours[0]),
        Reference(MRImageStorage, ours[1]),
        Reference(CTImageStorage, ours[2]),
        Reference(CTImageStorage, theirs),
        *(Reference(CTImageStorage, uid) for uid in missing),
    ]

    with runtime.reader() as session:
        result = check_commitment(session, runtime.store, default_facility.id, references)

    assert result.committed == [references[0]]
    assert result.failed[:3] == [
        (references[1], CLASS_INSTANCE_CONFLICT),
        (references[2], PROCESSING_FAILURE),
        (references[3], NO_SUCH_OBJECT_INSTANCE),
    ]
    assert result.failed[3:] == [(ref, NO_SUCH_OBJECT_INSTANCE) for ref in references[4:]]
    assert not result.all_committed
