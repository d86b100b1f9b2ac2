"""DICOMweb (PS3.18) under /dicom-web: one router per service."""

from __future__ import annotations

from fastapi import APIRouter


def routers() -> list[APIRouter]:
    """QIDO-RS, WADO-RS (instances, metadata, frames, rendered, bulk data), STOW-RS and
    DELETE.

    Order matters only where paths could overlap; none of these do.
    """
    from noctis.api.dicomweb import (
        bulkdata,
        delete,
        frames,
        metadata,
        qido,
        rendered,
        stow,
        wado,
    )

    return [
        qido.router,
        metadata.router,
        frames.router,
        rendered.router,
        wado.router,
        bulkdata.router,
        stow.router,
        delete.router,
    ]
