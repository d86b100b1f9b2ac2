"""Documents attached to a study (a scanned requisition, a referral letter): a PDF stored in
the study as an Encapsulated PDF instance, in a series of its own, through ingest, and
listed with the study."""

from __future__ import annotations

import hashlib

from pydicom.uid import generate_uid
from sqlalchemy import func, select

from noctis.core.audit import AuditEvent, AuditOutcome, add_to_session
from noctis.core.documents import store_document, study_attributes
from noctis.core.ingest import FacilityRef
from noctis.core.runtime import Runtime
from noctis.core.workflow import Actor
from noctis.dicom.documents import DocumentIdentity, encapsulated_pdf
from noctis.index.models import Facility, Study, utcnow
from noctis.index.reports import StudyAttachment

ATTACHMENT_SERIES_BASE = 9800  # series numbers 9801, 9802, ... one per attachment
MAX_ATTACHMENT_BYTES = 50 << 20


class NotAPdf(ValueError):
    """The upload is not a PDF document (the API answers 415)."""


def attach_pdf(
    runtime: Runtime,
    study_pk: int,
    pdf: bytes,
    *,
    title: str,
    filename: str,
    actor: Actor,
) -> StudyAttachment:
    """Store ``pdf`` in the study and list it (IngestError if the archive refuses it)."""
    if not pdf.startswith(b"%PDF-"):
        raise NotAPdf("only PDF documents can be attached (the file does not start with %PDF-)")
    with runtime.reader() as session:
        study = session.get(Study, study_pk)
        assert study is not None
        facility = session.get(Facility, study.facility_id)
        assert facility is not None
        count = session.scalar(select(func.count()).where(StudyAttachment.study_pk == study_pk))
        attributes = study_attributes(study)
        ref = FacilityRef(facility.id, facility.name)
    now = utcnow()
    identity = DocumentIdentity(
        sop_instance_uid=generate_uid(),
        series_instance_uid=generate_uid(),
        series_number=ATTACHMENT_SERIES_BASE + int(count or 0) + 1,
        instance_number=1,
        created_at=now,
        series_description=f"Attachment: {title}",
    )
    part10 = encapsulated_pdf(attributes, identity, pdf, title=title)
    store_document(runtime, ref, part10)
    with runtime.sessions.begin() as session:
        row = StudyAttachment(
            study_pk=study_pk,
            facility_id=ref.id,
            title=title[:255],
            filename=filename[:255],
            sop_instance_uid=identity.sop_instance_uid,
            series_instance_uid=identity.series_instance_uid,
            size_bytes=len(pdf),
            sha256=hashlib.sha256(pdf).hexdigest(),
            uploaded_by=actor.subject,
            uploaded_at=now,
        )
        session.add(row)
        add_to_session(
            session,
            AuditEvent(
                action="attachment",
                outcome=AuditOutcome.SUCCESS,
                actor=actor.subject,
                actor_type=actor.type,
                client=actor.client,
                study_instance_uid=attributes.study_instance_uid,
                facility_id=ref.id,
                detail={
                    "title": title,
                    "sop_instance_uid": identity.sop_instance_uid,
                    "bytes": len(pdf),
                },
            ),
        )
        session.flush()
        session.expunge(row)
    return row


def attachments_of(runtime: Runtime, study_pk: int) -> list[StudyAttachment]:
    with runtime.reader() as session:
        rows = list(
            session.scalars(
                select(StudyAttachment)
                .where(StudyAttachment.study_pk == study_pk)
                .order_by(StudyAttachment.id)
            )
        )
        session.expunge_all()
    return rows
