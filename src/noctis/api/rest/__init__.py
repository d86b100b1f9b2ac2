"""The REST API beside DICOMweb (``/api``): facilities, users, tokens, audit, system status,
deletion, legal holds and the consistency check."""

from __future__ import annotations

from fastapi import APIRouter

from noctis.api.rest import lifecycle, notifications, records, results, routes, studies, users

router = APIRouter()
router.include_router(records.router)
router.include_router(users.router)
router.include_router(routes.router)
router.include_router(studies.router)
router.include_router(lifecycle.router)
router.include_router(notifications.router)
router.include_router(results.router)

__all__ = ["router"]
