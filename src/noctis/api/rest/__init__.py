"""The REST API beside DICOMweb (``/api``): facilities, users, tokens, audit, system status,
deletion, legal holds, the consistency check and the reading worklist."""

from __future__ import annotations

from fastapi import APIRouter

from noctis.api.rest import (
    lifecycle,
    notifications,
    orders,
    records,
    report_library,
    reports,
    results,
    routes,
    studies,
    users,
    worklist,
)

router = APIRouter()
router.include_router(records.router)
router.include_router(users.router)
router.include_router(routes.router)
router.include_router(studies.router)
router.include_router(lifecycle.router)
router.include_router(notifications.router)
router.include_router(worklist.router)
router.include_router(results.router)
router.include_router(reports.router)
router.include_router(report_library.router)
router.include_router(orders.router)

__all__ = ["router"]
