"""The REST API beside DICOMweb (``/api``): facilities, users, tokens, audit, system status."""

from __future__ import annotations

from fastapi import APIRouter

from noctis.api.rest import records, routes, studies, users

router = APIRouter()
router.include_router(records.router)
router.include_router(users.router)
router.include_router(routes.router)
router.include_router(studies.router)

__all__ = ["router"]
