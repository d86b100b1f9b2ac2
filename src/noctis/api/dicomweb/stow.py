"""STOW-RS: POST /dicom-web/studies[/{study}] (PS3.18 10.5), through the one write path.

The body is spooled part by part to files in the spool directory and checked as a whole
before anything is stored: a malformed body (400) stores nothing. Each part is then written
into the object store's writer for incoming data (`noctis.storage.incoming`) and stored by
``noctis.core.ingest.ingest``, exactly as DIMSE C-STORE stores it.

Which facility receives the instances: the caller's only facility; a caller granted several
(or an administrator, who may see all) names one with ``?facility=<name>``, unless only one
facility exists. Status: 200 all stored, 202 some failed, 409 none stored; the body lists
ReferencedSOPSequence and FailedSOPSequence with a FailureReason per failed instance.
"""

from __future__ import annotations

import json
import logging
from typing import Any, BinaryIO

from fastapi import APIRouter, HTTPException, Request, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from noctis.api.audit import actor_type
from noctis.api.dicomweb.context import DICOM_JSON, PREFIX, ContextDep, WebContext, bad_request
from noctis.api.dicomweb.multipart import (
    MultipartError,
    SpooledPart,
    parse_media_type,
    spool_parts,
)
from noctis.api.dicomweb.params import ParamError, check_uid
from noctis.core.ingest import FacilityRef, IngestError, IngestFailure, ingest
from noctis.core.reconciliation import Sender
from noctis.dicom.header import MalformedDicom, parse_instance_header
from noctis.dicom.json import sequence, tag_key, value_json
from noctis.index.models import Facility

log = logging.getLogger(__name__)
router = APIRouter(prefix=PREFIX, tags=["STOW-RS"])

DICOM = "application/dicom"
# FailureReason (0008,1197) values, PS3.18 Table 10.5.3-2 / PS3.4 Annex B.
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
OUT_OF_RESOURCES = 0xA700
DATA_SET_MISMATCH = 0xA900
STUDY_UID_MISMATCH = 0xA901  # 43265: the instance is not of the study named in the path
CANNOT_UNDERSTAND = 0xC000
# Filing refusals: the C-STORE statuses of the same refusals (noctis.scp.status).
SERIES_OF_ANOTHER_STUDY = 0xC110
STUDY_OF_ANOTHER_PATIENT = 0xC111
_REASONS = {
    IngestFailure.MALFORMED: CANNOT_UNDERSTAND,
    IngestFailure.MISMATCH: DATA_SET_MISMATCH,
    IngestFailure.CONFLICT: DUPLICATE_SOP_INSTANCE,
    IngestFailure.SERIES_OF_ANOTHER_STUDY: SERIES_OF_ANOTHER_STUDY,
    IngestFailure.STUDY_OF_ANOTHER_PATIENT: STUDY_OF_ANOTHER_PATIENT,
    IngestFailure.STORAGE_UNAVAILABLE: OUT_OF_RESOURCES,
    IngestFailure.INDEX_UNAVAILABLE: PROCESSING_FAILURE,
    IngestFailure.QUOTA_EXCEEDED: OUT_OF_RESOURCES,
    IngestFailure.POOL_UNAVAILABLE: OUT_OF_RESOURCES,
}


@router.post("/studies", description=__doc__)
async def store_instances(request: Request, ctx: ContextDep) -> Response:
    return await _store(request, ctx, None)


@router.post("/studies/{study}", description=__doc__)
async def store_study_instances(study: str, request: Request, ctx: ContextDep) -> Response:
    try:
        check_uid(study, "StudyInstanceUID")
    except ParamError as exc:
        raise bad_request(str(exc)) from exc
    return await _store(request, ctx, study)


async def _store(request: Request, ctx: WebContext, study: str | None) -> Response:
    if not ctx.principal.can_write:
        ctx.record("stow", "denied", study=study, reason=f"role {ctx.principal.role} is read-only")
        raise HTTPException(403, detail="your role may not store instances")
    boundary = _boundary(request.headers.get("content-type", ""))
    facility = await run_in_threadpool(_target_facility, ctx)
    spool = ctx.runtime.settings.resolved_spool_dir()
    try:
        parts = await spool_parts(request.stream(), boundary, spool)
    except MultipartError as exc:
        ctx.record("stow", "failure", study=study, facility_id=facility.id, reason=str(exc))
        raise bad_request(f"malformed multipart body: {exc}") from exc
    try:
        results = [
            await run_in_threadpool(_store_part, ctx, facility, part, study) for part in parts
        ]
    finally:
        for part in parts:
            part.path.unlink(missing_ok=True)
    return _response(ctx, facility, study, results)


def _boundary(content_type: str) -> str:
    media = parse_media_type(content_type)
    if media.type != "multipart/related":
        raise HTTPException(415, detail='STOW-RS takes multipart/related; type="application/dicom"')
    part_type = (media.param("type") or DICOM).lower()
    if part_type != DICOM:
        raise HTTPException(
            415, detail=f"parts of type {part_type} are not supported; send application/dicom"
        )
    boundary = media.param("boundary")
    if not boundary:
        raise bad_request("the Content-Type has no boundary parameter")
    return boundary


def _target_facility(ctx: WebContext) -> FacilityRef:
    """The facility named by ``?facility=NAME`` (resolved with every service's: one the
    caller has, else 404), or the caller's only enabled one."""
    chosen = ctx.facility
    if chosen is not None:
        if not chosen.enabled:
            ctx.record("stow", "denied", facility_id=chosen.id, reason="facility disabled")
            raise HTTPException(403, detail=f"facility {chosen.name!r} is disabled")
        return FacilityRef(chosen.id, chosen.name)
    with ctx.runtime.sessions() as session:
        statement = select(Facility.id, Facility.name).where(Facility.enabled.is_(True))
        if ctx.facility_ids is not None:
            statement = statement.where(Facility.id.in_(list(ctx.facility_ids)))
        allowed = {name: FacilityRef(id, name) for id, name in session.execute(statement)}
    if len(allowed) == 1:
        return next(iter(allowed.values()))
    if not allowed:
        ctx.record("stow", "denied", reason="no facility granted")
        raise HTTPException(403, detail="you are not granted any facility to store into")
    names = ", ".join(sorted(allowed))
    raise bad_request(f"name the target facility with ?facility=<name> (one of: {names})")


def _store_part(
    ctx: WebContext, facility: FacilityRef, part: SpooledPart, study: str | None
) -> dict[str, Any]:
    """Store one part; the outcome as a dict for the response."""
    content_type = part.content_type
    if content_type and parse_media_type(content_type).type != DICOM:
        return _failed(None, None, None, CANNOT_UNDERSTAND, f"part of type {content_type}")
    try:
        incoming = ctx.runtime.store.incoming()
    except OSError as exc:
        return _failed(None, None, None, OUT_OF_RESOURCES, f"could not spool the part: {exc}")
    with incoming:
        try:
            with part.path.open("rb") as body:
                incoming.write_from(body)
        except OSError as exc:
            return _failed(None, None, None, OUT_OF_RESOURCES, f"could not spool the part: {exc}")
        if study is not None:
            try:
                header = parse_instance_header(incoming.reader())
            except MalformedDicom as exc:
                return _failed(None, None, None, CANNOT_UNDERSTAND, str(exc))
            if header.study_instance_uid != study:
                return _failed(
                    header.sop_class_uid,
                    header.sop_instance_uid,
                    header.study_instance_uid,
                    STUDY_UID_MISMATCH,
                    f"instance of study {header.study_instance_uid}, not {study}",
                )
        try:
            result = ingest(
                ctx.runtime,
                facility,
                incoming,
                sender=Sender(ctx.principal.subject, actor_type(ctx.principal), ctx.client),
            )
        except IngestError as error:
            uids = _uids(incoming.reader())
            failed = _failed(*uids, _REASONS.get(error.failure, PROCESSING_FAILURE), error.message)
            failed["quota"] = error.failure is IngestFailure.QUOTA_EXCEEDED
            return failed
    header = result.header
    return {
        "ok": True,
        "sop_class": header.sop_class_uid,
        "sop_instance": header.sop_instance_uid,
        "study": header.study_instance_uid,
        "series": header.series_instance_uid,
        "outcome": result.outcome.value,
    }


def _uids(instance: BinaryIO) -> tuple[str | None, str | None, str | None]:
    try:
        header = parse_instance_header(instance)
    except MalformedDicom:
        return None, None, None
    return header.sop_class_uid, header.sop_instance_uid, header.study_instance_uid


def _failed(
    sop_class: str | None, sop_instance: str | None, study: str | None, reason: int, message: str
) -> dict[str, Any]:
    return {
        "ok": False,
        "sop_class": sop_class,
        "sop_instance": sop_instance,
        "study": study,
        "reason": reason,
        "message": message,
    }


def _response(
    ctx: WebContext, facility: FacilityRef, study: str | None, results: list[dict[str, Any]]
) -> Response:
    stored = [r for r in results if r["ok"]]
    failed = [r for r in results if not r["ok"]]
    for study_uid in dict.fromkeys(r["study"] for r in results):
        mine = [r for r in results if r["study"] == study_uid]
        ok = sum(1 for r in mine if r["ok"])
        ctx.record(
            "stow",
            "success" if ok == len(mine) else "failure",
            study=study_uid,
            facility_id=facility.id,
            stored=ok,
            failed=len(mine) - ok,
            reasons=[r["message"][:200] for r in mine if not r["ok"]][:10] or None,
        )
    body: dict[str, Any] = {}
    retrieve_study = study or (stored[0]["study"] if stored else None)
    if retrieve_study and stored:
        body[tag_key(0x00081190)] = value_json("UR", f"{ctx.base_url}/studies/{retrieve_study}")
    if failed:
        body[tag_key(0x00081198)] = sequence(_failed_item(r) for r in failed)
    if stored:
        body[tag_key(0x00081199)] = sequence(_stored_item(ctx, r) for r in stored)
    status = 200 if not failed else 202 if stored else _none_stored(failed)
    if failed:
        log.info("STOW: %d stored, %d failed: %s", len(stored), len(failed), failed[0]["message"])
    headers = {"Warning": _warning(failed)} if failed else None
    return Response(_dumps(body), status_code=status, media_type=DICOM_JSON, headers=headers)


def _none_stored(failed: list[dict[str, Any]]) -> int:
    """409, or 507 Insufficient Storage when every instance was refused by the facility's
    quota: the request is not at fault (413 would say it is too large in itself), the
    archive has no room for the facility until usage drops or the quota is raised."""
    return 507 if all(r.get("quota") for r in failed) else 409


def _stored_item(ctx: WebContext, result: dict[str, Any]) -> dict[str, Any]:
    url = (
        f"{ctx.base_url}/studies/{result['study']}/series/{result['series']}"
        f"/instances/{result['sop_instance']}"
    )
    return {
        tag_key(0x00081150): value_json("UI", result["sop_class"]),
        tag_key(0x00081155): value_json("UI", result["sop_instance"]),
        tag_key(0x00081190): value_json("UR", url),
    }


def _failed_item(result: dict[str, Any]) -> dict[str, Any]:
    return {
        tag_key(0x00081150): value_json("UI", result["sop_class"]),
        tag_key(0x00081155): value_json("UI", result["sop_instance"]),
        tag_key(0x00081197): value_json("US", result["reason"]),
        # Why, in words, per instance (the Warning header sums them up): the ErrorComment a
        # C-STORE failure carries.
        tag_key(0x00000902): value_json("LO", result["message"][:64]),
    }


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(dict(sorted(body.items())), separators=(",", ":")).encode("utf-8")


def _warning(failed: list[dict[str, Any]]) -> str:
    reasons = "; ".join(dict.fromkeys(r["message"] for r in failed))[:300]
    text = reasons.encode("ascii", "replace").decode("ascii").replace('"', "'")
    return f'299 noctis "{len(failed)} instance(s) not stored: {text}"'
