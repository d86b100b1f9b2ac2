"""WADO-RS rendered images and thumbnails (PS3.18 8.3.5, 8.3.6 and 9).

JPEG (default) or PNG per Accept or the ``accept`` query parameter; ``window=center,width[,
function]``, ``viewport=w,h[,sx,sy,sw,sh]`` and ``quality`` are honoured, the data set's VOI
and Modality LUTs otherwise. Series and study thumbnails show the middle image of the first
series that has pixels: the JPEG the worker made when the study became stable, when the
request asks for the default rendering, else rendered on demand. The pure image work is
``noctis.dicom.render``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from fastapi import APIRouter, Request, Response
from pydicom.dataset import Dataset

from noctis.api.dicomweb.access import audit_read, fail, locate
from noctis.api.dicomweb.context import (
    PREFIX,
    ContextDep,
    WebContext,
    bad_request,
    not_acceptable,
    not_found,
)
from noctis.api.dicomweb.failures import FrameNotFound, read_failures
from noctis.api.dicomweb.frames import parse_frame_list
from noctis.api.dicomweb.lookup import StoredInstance
from noctis.api.dicomweb.multipart import MultipartWriter, parse_accept
from noctis.api.dicomweb.negotiate import plan_image
from noctis.api.dicomweb.objects import (
    check_frames,
    frame_layout,
    stored_frames,
    whole_object_pixels,
)
from noctis.dicom import render, thumbnail
from noctis.storage import ObjectNotFound

log = logging.getLogger(__name__)

router = APIRouter(prefix=PREFIX, tags=["WADO-RS rendered"])

THUMBNAIL_SIZE = thumbnail.THUMBNAIL_SIZE
INSTANCE = "/studies/{study}/series/{series}/instances/{instance}"


@dataclass(frozen=True)
class RenderRequest:
    media_type: str
    window: render.Window | None
    viewport: render.Viewport | None
    quality: int


def _options(request: Request, *, thumbnail: bool) -> RenderRequest:
    query = request.query_params
    media_type = plan_image(parse_accept(request.headers.get("accept")), query.get("accept"))
    if media_type is None:
        raise not_acceptable("rendered images are available as image/jpeg or image/png")
    try:
        window = render.parse_window(query["window"]) if "window" in query else None
        viewport = render.parse_viewport(query["viewport"]) if "viewport" in query else None
        quality = render.parse_quality(query["quality"]) if "quality" in query else 90
    except render.RenderError as exc:
        raise bad_request(str(exc)) from exc
    if thumbnail and viewport is None:
        viewport = render.Viewport(THUMBNAIL_SIZE, THUMBNAIL_SIZE)
    return RenderRequest(media_type, None if thumbnail else window, viewport, quality)


def _pixels(ctx: WebContext, instance: StoredInstance, number: int) -> tuple[Dataset, np.ndarray]:
    store = ctx.runtime.store
    located = frame_layout(store, ctx.cache, instance)
    if located is None:
        if not instance.rows:
            raise FrameNotFound("the instance is not an image")
        image, layout, stored = whole_object_pixels(
            store, instance, number, max_inflated=ctx.max_inflated
        )
    else:
        image, layout = located
        check_frames(layout.number_of_frames, [number])
        stored = next(stored_frames(store, instance, layout, [number], ctx.cache.frames))
    return image, render.frame_array(image, layout, number - 1, stored)


def _render(
    ctx: WebContext, action: str, instance: StoredInstance, number: int, options: RenderRequest
) -> bytes:
    with read_failures(ctx, action, instance):  # the statuses: see failures.py
        image, pixels = _pixels(ctx, instance, number)
        try:
            return render.render(
                image,
                pixels,
                media_type=options.media_type,
                window=options.window,
                viewport=options.viewport,
                quality=options.quality,
                frame_index=number - 1,
            )
        except render.RenderError as exc:  # the rendering asked for (viewport, window)
            raise fail(ctx, action, instance, 400, f"cannot render: {exc}") from exc


def _image_response(
    ctx: WebContext, action: str, instance: StoredInstance, number: int, options: RenderRequest
) -> Response:
    body = _render(ctx, action, instance, number, options)
    audit_read(ctx, action, [instance], frame=number)
    return Response(body, media_type=options.media_type)


def _instance_image(
    ctx: WebContext,
    request: Request,
    kind: str,
    path: tuple[str, str, str],
    frames: str | None = None,
) -> Response:
    """One rendered image or thumbnail of an instance: its first frame, or the one named."""
    options = _options(request, thumbnail=kind == "thumbnail")
    number = 1
    if frames is not None:
        numbers = parse_frame_list(frames)
        if len(numbers) != 1:
            raise bad_request(f"one frame per {kind} request")
        number = numbers[0]
    action = f"wado.{kind}"
    found = locate(ctx, action, *path)[0]
    return _image_response(ctx, action, found, number, options)


@router.get(INSTANCE + "/rendered")
def instance_rendered(
    study: str, series: str, instance: str, request: Request, ctx: ContextDep
) -> Response:
    return _instance_image(ctx, request, "rendered", (study, series, instance))


@router.get(INSTANCE + "/frames/{frames}/rendered")
def frame_rendered(
    study: str, series: str, instance: str, frames: str, request: Request, ctx: ContextDep
) -> Response:
    return _instance_image(ctx, request, "rendered", (study, series, instance), frames)


@router.get("/studies/{study}/series/{series}/rendered")
def series_rendered(study: str, series: str, request: Request, ctx: ContextDep) -> Response:
    options = _options(request, thumbnail=False)
    found = [i for i in locate(ctx, "wado.rendered", study, series) if i.rows]
    return _multipart(ctx, found, options)


@router.get("/studies/{study}/rendered")
def study_rendered(study: str, request: Request, ctx: ContextDep) -> Response:
    options = _options(request, thumbnail=False)
    found = [i for i in locate(ctx, "wado.rendered", study) if i.rows]
    return _multipart(ctx, found, options)


def _multipart(
    ctx: WebContext, instances: list[StoredInstance], options: RenderRequest
) -> Response:
    if not instances:
        raise not_found("Image")
    writer = MultipartWriter(options.media_type)
    bodies = [(_render(ctx, "wado.rendered", i, 1, options), None) for i in instances]
    audit_read(ctx, "wado.rendered", instances)
    return Response(writer.message(bodies), media_type=writer.content_type)


@router.get(INSTANCE + "/thumbnail")
def instance_thumbnail(
    study: str, series: str, instance: str, request: Request, ctx: ContextDep
) -> Response:
    return _instance_image(ctx, request, "thumbnail", (study, series, instance))


@router.get(INSTANCE + "/frames/{frames}/thumbnail")
def frame_thumbnail(
    study: str, series: str, instance: str, frames: str, request: Request, ctx: ContextDep
) -> Response:
    return _instance_image(ctx, request, "thumbnail", (study, series, instance), frames)


@router.get("/studies/{study}/series/{series}/thumbnail")
def series_thumbnail(study: str, series: str, request: Request, ctx: ContextDep) -> Response:
    found = locate(ctx, "wado.thumbnail", study, series)
    return _group_thumbnail(ctx, request, _representative(found))


@router.get("/studies/{study}/thumbnail")
def study_thumbnail(study: str, request: Request, ctx: ContextDep) -> Response:
    found = locate(ctx, "wado.thumbnail", study)
    return _group_thumbnail(ctx, request, _representative(found))


def _group_thumbnail(ctx: WebContext, request: Request, instance: StoredInstance) -> Response:
    """A series' or study's thumbnail: the one the worker made when the study became stable
    (``noctis.dicom.thumbnail``) when the request asks for the default rendering and it
    exists, else rendered now."""
    options = _options(request, thumbnail=True)
    if _default_thumbnail(request, options):
        key = thumbnail.thumbnail_key(
            instance.facility, instance.study_uid, instance.series_uid, instance.object_key
        )
        try:
            body = ctx.runtime.store.get(key)
        except ObjectNotFound:
            pass  # not made yet (the study is not stable, or changed since)
        except Exception:
            log.warning("cannot read the thumbnail %s; rendering it", key, exc_info=True)
        else:
            audit_read(ctx, "wado.thumbnail", [instance], frame=1)
            return Response(body, media_type=render.JPEG)
    return _image_response(ctx, "wado.thumbnail", instance, 1, options)


def _default_thumbnail(request: Request, options: RenderRequest) -> bool:
    query = request.query_params
    return (
        options.media_type == render.JPEG
        and "viewport" not in query
        and options.quality == thumbnail.THUMBNAIL_QUALITY
    )


def _representative(instances: list[StoredInstance]) -> StoredInstance:
    """The middle image of the first series that has images."""
    images = [i for i in instances if i.rows]
    if not images:
        raise not_found("Image")
    series = [i for i in images if i.series_uid == images[0].series_uid]
    return thumbnail.representative(series)
