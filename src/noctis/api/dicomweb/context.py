"""What every DICOMweb handler needs: the archive, the caller, the audit trail, its base URL,
and the facility the caller chose with ``?facility=NAME`` (resolved here, once, for every
service: QIDO narrows its search to it, retrieval answers from it, STOW stores into it)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from sqlalchemy import select

from noctis.api.audit import web_event
from noctis.api.dicomweb.cache import DicomWebCache
from noctis.api.security import Principal, client_address, get_audit, get_principal
from noctis.core.audit import AuditSink
from noctis.core.runtime import Runtime
from noctis.index.models import Facility
from noctis.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "/dicom-web"
DICOM_JSON = "application/dicom+json"
FACILITY_PARAMETER = "facility"


@dataclass(frozen=True)
class ChosenFacility:
    """The facility named by ``?facility=NAME``, one of the caller's."""

    id: int
    name: str
    enabled: bool


@dataclass
class WebContext:
    runtime: Runtime
    principal: Principal
    audit: AuditSink
    client: str
    base_url: str  # absolute URL of the DICOMweb root, without a trailing slash
    cache: DicomWebCache
    settings: Settings
    # ``?facility=NAME``: answer from that facility only. An administrator needs it for a UID
    # that two facilities hold (a 409 names them otherwise); anyone may give it.
    facility: ChosenFacility | None = None

    @property
    def max_inflated(self) -> int:
        """Bytes a stored deflated object may inflate to (NOCTIS_MAX_INFLATED_MB, as at ingest)."""
        return self.settings.max_inflated_mb << 20

    @property
    def sees_several_facilities(self) -> bool:
        return self.facility_ids is None or len(self.facility_ids) > 1

    @property
    def facility_ids(self) -> frozenset[int] | None:
        return self.principal.facility_ids

    def record(
        self,
        action: str,
        outcome: str,
        *,
        study: str | None = None,
        facility_id: int | None = None,
        **detail: Any,
    ) -> None:
        """One audit event (action like "qido.studies", outcome success/failure/denied)."""
        self.audit.record(
            web_event(
                self.principal,
                self.client,
                action,
                outcome,
                study_instance_uid=study,
                facility_id=facility_id,
                detail={k: v for k, v in detail.items() if v is not None} or None,
            )
        )


def get_context(request: Request) -> WebContext:
    """The caller (401 if nobody is logged in) and what a handler needs.

    Resolves the principal and the audit sink with ``noctis.api.security``'s own functions,
    inside this one (sync, thread pool) dependency: declaring PrincipalDep and AuditDep
    separately would cost two more thread hand-offs on every frame a viewer fetches.
    """
    principal = get_principal(request)
    audit = get_audit(request)
    base = str(request.base_url).rstrip("/") + PREFIX
    ctx = WebContext(
        runtime=request.app.state.runtime,
        principal=principal,
        audit=audit,
        client=client_address(request),
        base_url=base,
        cache=cache_of(request.app.state),
        settings=request.app.state.settings,
    )
    ctx.facility = choose_facility(ctx, request.query_params.get(FACILITY_PARAMETER))
    return ctx


def choose_facility(ctx: WebContext, name: str | None) -> ChosenFacility | None:
    """``?facility=NAME`` as one of the caller's facilities; None when not given.

    404 when the caller has no facility of that name, whether none exists or it is not
    theirs: both answer alike, so a facility's existence is not disclosed (the audit trail
    records which). Without the parameter, a UID that several of the caller's facilities
    hold is answered 409 by retrieval (`noctis.api.dicomweb.access`)."""
    if not name:
        return None
    with ctx.runtime.reading() as conn:
        row = conn.execute(
            select(Facility.id, Facility.name, Facility.enabled).where(Facility.name == name)
        ).first()
    if row is None:
        ctx.record("facility", "failure", reason=f"no facility {name[:64]!r}")
        raise not_found(f"Facility {name[:64]!r}")
    if not ctx.principal.can_read(row.id):
        ctx.record("facility", "denied", facility_id=row.id, reason="facility not granted")
        raise not_found(f"Facility {name[:64]!r}")
    return ChosenFacility(row.id, row.name, row.enabled)


def cache_of(state: Any) -> DicomWebCache:
    cache = getattr(state, "dicomweb_cache", None)
    if cache is None:
        cache = DicomWebCache()
        state.dicomweb_cache = cache
    return cache  # type: ignore[no-any-return]


ContextDep = Annotated[WebContext, Depends(get_context)]


def bad_request(message: str) -> HTTPException:
    return HTTPException(400, detail=message)


def not_found(what: str) -> HTTPException:
    return HTTPException(404, detail=f"{what} not found")


def not_acceptable(message: str) -> HTTPException:
    return HTTPException(406, detail=message)
