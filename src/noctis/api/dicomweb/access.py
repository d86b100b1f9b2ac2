"""Resolving a WADO-RS path to the instances the caller may see, with the audit trail.

A study, series or instance of a facility the caller is not granted answers exactly like one
that does not exist (404), so its existence is not disclosed; the audit trail records it as
"denied" with the facility that holds it.
"""

from __future__ import annotations

import logging

from fastapi import HTTPException

from noctis.api.dicomweb.context import FACILITY_PARAMETER, WebContext, bad_request, not_found
from noctis.api.dicomweb.lookup import StoredInstance, find_instances, hidden_from
from noctis.api.dicomweb.params import ParamError, check_uid
from noctis.dicom.errors import StoredObjectDamaged

log = logging.getLogger(__name__)


def locate(
    ctx: WebContext,
    action: str,
    study: str,
    series: str | None = None,
    sop: str | None = None,
) -> list[StoredInstance]:
    """The visible instances under the path, or HTTP 404 (400 for a malformed UID)."""
    try:
        check_uid(study, "StudyInstanceUID")
        if series is not None:
            check_uid(series, "SeriesInstanceUID")
        if sop is not None:
            check_uid(sop, "SOPInstanceUID")
    except ParamError as exc:
        raise bad_request(str(exc)) from exc
    hidden: int | None = None
    with ctx.runtime.reading() as conn:
        found = find_instances(conn, ctx.facility_ids, study, series, sop)
        if ctx.facility is not None:
            found = [i for i in found if i.facility_id == ctx.facility.id]
        if not found:
            hidden = hidden_from(conn, ctx.facility_ids, study, series, sop)
    if not found:
        what = "instance" if sop else "series" if series else "study"
        ctx.record(
            action,
            "denied" if hidden is not None else "failure",
            study=study,
            facility_id=hidden,
            reason=f"{what} not found" if hidden is None else f"{what} of another facility",
            series=series,
            instance=sop,
        )
        raise not_found(what.capitalize())
    # Instances come ordered by study row, and a facility's copy of a study is its own row:
    # several facilities show as a first and last instance of different facilities.
    if found[0].facility_id != found[-1].facility_id:
        raise _ambiguous(ctx, action, found, study, series, sop)
    return found


def _ambiguous(
    ctx: WebContext,
    action: str,
    found: list[StoredInstance],
    study: str,
    series: str | None,
    sop: str | None,
) -> HTTPException:
    """409 for a UID that several facilities the caller sees hold: their data are never
    mixed in one answer, and the caller chooses with ``?facility=NAME``."""
    names = sorted({i.facility for i in found})
    ctx.record(
        action,
        "failure",
        study=study,
        reason=f"held by facilities {', '.join(names)}",
        series=series,
        instance=sop,
    )
    return HTTPException(
        409,
        detail=f"{study} is held by facilities {', '.join(names)}; their data are answered "
        f"one facility at a time: add ?{FACILITY_PARAMETER}=NAME (one of {', '.join(names)})",
    )


def audit_read(
    ctx: WebContext, action: str, instances: list[StoredInstance], **detail: object
) -> None:
    """One "success" event per study (and facility) read."""
    seen: dict[tuple[str, int], int] = {}
    for instance in instances:
        key = (instance.study_uid, instance.facility_id)
        seen[key] = seen.get(key, 0) + 1
    for (study, facility_id), count in seen.items():
        ctx.record(
            action, "success", study=study, facility_id=facility_id, instances=count, **detail
        )


def fail(
    ctx: WebContext, action: str, instance: StoredInstance, status: int, message: str
) -> HTTPException:
    ctx.record(
        action,
        "failure",
        study=instance.study_uid,
        facility_id=instance.facility_id,
        reason=message,
        instance=instance.sop_uid,
    )
    return HTTPException(status, detail=message)


def damaged(
    ctx: WebContext, action: str, instance: StoredInstance, exc: StoredObjectDamaged
) -> HTTPException:
    """500 for a stored object shorter than the index (or its own Pixel Data element) says,
    or a corrupt deflated one: logged for the operators, since nothing the client does will
    fix it."""
    log.error("stored object %s of instance %s: %s", instance.object_key, instance.sop_uid, exc)
    return fail(ctx, action, instance, 500, f"the stored object is damaged: {exc}")
