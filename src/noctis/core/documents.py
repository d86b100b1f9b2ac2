"""Documents the archive itself stores into a study (report PDFs and SRs, attached PDFs),
through THE write path, `noctis.core.ingest.ingest`, so any DICOM client sees them as it sees
the images (QIDO, WADO, C-FIND, C-MOVE, C-GET)."""

from __future__ import annotations

import io

from noctis.core.ingest import FacilityRef, IngestError, IngestFailure, IngestResult, ingest
from noctis.core.reconciliation import Sender
from noctis.core.runtime import Runtime
from noctis.dicom.documents import StudyAttributes
from noctis.index.models import Study

# The audit trail's name for what the archive stores by itself.
ARCHIVE_SENDER = Sender("noctis:documents", "system", "")


def study_attributes(study: Study) -> StudyAttributes:
    """The attributes a document of ``study`` is filed under: those the study was stored with."""
    return StudyAttributes(
        study_instance_uid=study.study_instance_uid,
        patient_id=study.patient_id,
        issuer_of_patient_id=study.issuer_of_patient_id,
        patient_name=study.patient_name,
        patient_birth_date=study.patient_birth_date,
        patient_sex=study.patient_sex,
        study_date=study.study_date,
        study_time=study.study_time,
        accession_number=study.accession_number,
        study_id=study.study_id,
        study_description=study.study_description,
        referring_physician_name=study.referring_physician_name,
    )


def store_document(runtime: Runtime, facility: FacilityRef, part10: bytes) -> IngestResult:
    """Store one Part 10 instance in ``facility`` (IngestError if the archive refuses it)."""
    try:
        with runtime.store.incoming() as incoming:
            incoming.write_from(io.BytesIO(part10))
            return ingest(runtime, facility, incoming, sender=ARCHIVE_SENDER)
    except OSError as exc:  # the spool could not be made or written
        raise IngestError(
            IngestFailure.STORAGE_UNAVAILABLE, f"could not spool the document: {exc}"
        ) from exc
