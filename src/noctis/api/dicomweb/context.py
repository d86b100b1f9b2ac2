"""What every DICOMweb handler needs: the archive, the caller, the audit trail, its base URL."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from noctis.api.dicomweb.cache import DicomWebCache
from noctis.api.security import (
    AuditSink,
    Principal,
    client_address,
    get_audit,
    get_principal,
)
from noctis.archive import Archive
from noctis.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "/dicom-web"
DICOM_JSON = "application/dicom+json"
FACILITY_PARAMETER = "facility"


def get_archive(request: Request) -> Archive:
    return request.app.state.archive  # type: ignore[no-any-return]


ArchiveDep = Annotated[Archive, Depends(get_archive)]


@dataclass
class WebContext:
    archive: Archive
    principal: Principal
    audit: AuditSink
    client: str
    base_url: str  # absolute URL of the DICOMweb root, without a trailing slash
    cache: DicomWebCache
    settings: Settings
    # ``?facility=NAME``: answer from that facility only. An administrator needs it for a UID
    # that two facilities hold (a 409 names them otherwise); anyone may give it.
    facility: str | None = None

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
            principal=self.principal,
            client=self.client,
            action=action,
            outcome=outcome,
            study_instance_uid=study,
            facility_id=facility_id,
            detail={k: v for k, v in detail.items() if v is not None} or None,
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
    return WebContext(
        archive=request.app.state.archive,
        principal=principal,
        audit=audit,
        client=client_address(request),
        base_url=base,
        cache=cache_of(request.app.state),
        settings=request.app.state.settings,
        facility=request.query_params.get(FACILITY_PARAMETER) or None,
    )


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
