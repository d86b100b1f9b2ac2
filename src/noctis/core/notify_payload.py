"""What a webhook or an e-mail carries, and how a webhook call is signed.

The payload names the event (id, kind, time), the facility and the study (its Study
Instance UID) with a title that says only what happened. The patient's name and ID, the
event's own title (which names the patient) and its detail (a free-text reason) leave the
archive only when the facility opts in (``includePatientIdentity``).

Signature: ``X-Noctis-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>``
with ``X-Noctis-Timestamp: <unix seconds>``; a receiver recomputes it over the raw body and
refuses a timestamp too old (a replay).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC
from email.message import EmailMessage
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from noctis.core.notifications import NotificationKind
from noctis.index.models import Facility, Study
from noctis.index.workflow import NotificationEvent

SIGNATURE_HEADER = "X-Noctis-Signature"
TIMESTAMP_HEADER = "X-Noctis-Timestamp"

PLAIN_TITLES = {
    NotificationKind.STAT_ARRIVED: "STAT study arrived",
    NotificationKind.REPORT_FINAL: "Report final",
    NotificationKind.REPORT_AMENDED: "Report amended",
    NotificationKind.CRITICAL_RESULT: "Critical result flagged",
}


def build_payload(
    session: Session, event: NotificationEvent, facility: Facility, *, include_identity: bool
) -> dict[str, Any]:
    created = event.created_at
    if created.tzinfo is None:  # SQLite gives naive UTC back
        created = created.replace(tzinfo=UTC)
    payload: dict[str, Any] = {
        "id": event.id,
        "kind": event.kind,
        "facility": facility.name,
        "studyInstanceUID": event.study_instance_uid,
        "title": PLAIN_TITLES.get(NotificationKind(event.kind), event.kind),
        "time": created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }
    if include_identity:
        payload["title"] = event.title
        payload["detail"] = dict(event.detail or {})
        study = session.scalar(
            select(Study).where(
                Study.facility_id == facility.id,
                Study.study_instance_uid == event.study_instance_uid,
            )
        )
        if study is not None:
            payload["patient"] = {"name": study.patient_name, "id": study.patient_id}
    return payload


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def email_message(payload: dict[str, Any], *, sender: str, to: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = f"[Noctis] {payload['title']}"
    lines = [
        str(payload["title"]),
        "",
        f"Facility: {payload['facility']}",
        f"Study Instance UID: {payload['studyInstanceUID'] or '-'}",
        f"Time: {payload['time']}",
        f"Event: {payload['kind']} #{payload['id']}",
    ]
    patient = payload.get("patient")
    if patient:
        lines.append(f"Patient: {patient['name']} ({patient['id']})")
    reason = (payload.get("detail") or {}).get("reason")
    if reason:
        lines.append(f"Reason: {reason}")
    message.set_content("\n".join(lines) + "\n")
    return message
