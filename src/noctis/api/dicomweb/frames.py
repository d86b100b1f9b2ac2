"""WADO-RS frames: /studies/{s}/series/{se}/instances/{i}/frames/{list}.

Frames are sent in the stored transfer syntax when the client accepts it (OHIF asks with
``transfer-syntax=*``), otherwise decoded to explicit VR little endian. Each part's
``Content-Type`` names its ``transfer-syntax``: strict clients decode by it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from noctis.api.dicomweb.access import audit_read, fail, locate
from noctis.api.dicomweb.context import PREFIX, ContextDep, WebContext, bad_request
from noctis.api.dicomweb.lookup import StoredInstance
from noctis.api.dicomweb.multipart import MultipartWriter, parse_accept
from noctis.api.dicomweb.negotiate import FramePlan, plan_frames
from noctis.api.dicomweb.objects import (
    FrameNotFound,
    check_frames,
    frame_layout,
    native_frames,
    stored_frames,
    whole_object_frames,
)
from noctis.dicom.transcode import EXPLICIT_VR_LITTLE_ENDIAN, FrameError
from noctis.storage import ObjectNotFound

router = APIRouter(prefix=PREFIX, tags=["WADO-RS frames"])

MAX_FRAMES_PER_REQUEST = 10_000


def parse_frame_list(text: str) -> list[int]:
    """``1,2,3`` (1-based) as a list; 400 for anything else."""
    try:
        numbers = [int(part) for part in text.replace("%2C", ",").split(",") if part.strip()]
    except ValueError as exc:
        raise bad_request(f"frame list must be comma-separated numbers, got {text[:60]!r}") from exc
    if not numbers or any(n < 1 for n in numbers):
        raise bad_request("frame numbers start at 1")
    if len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise bad_request(f"at most {MAX_FRAMES_PER_REQUEST} frames per request")
    return numbers


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}")
def retrieve_frames(
    study: str, series: str, instance: str, frames: str, request: Request, ctx: ContextDep
) -> Response:
    numbers = parse_frame_list(frames)
    found = locate(ctx, "wado.frames", study, series, instance)[0]
    ranges = parse_accept(request.headers.get("accept"))
    plan = plan_frames(ranges, found.transfer_syntax_uid)
    if plan is None:
        raise fail(ctx, "wado.frames", found, 406, _refusal(found))
    try:
        bodies, syntax = read_frames(ctx, found, numbers, plan)
    except FrameNotFound as exc:
        raise fail(ctx, "wado.frames", found, 404, str(exc)) from exc
    except FrameError as exc:
        raise fail(ctx, "wado.frames", found, 400, str(exc)) from exc
    except ObjectNotFound as exc:
        raise fail(ctx, "wado.frames", found, 503, "the stored object is unavailable") from exc
    audit_read(ctx, "wado.frames", [found], frames=frames[:200])
    writer = MultipartWriter(plan.part_type)
    part_type = f"{plan.part_type}; transfer-syntax={syntax}"
    body = writer.message([(data, part_type) for data in bodies])
    return Response(body, media_type=writer.content_type)


def read_frames(
    ctx: WebContext, instance: StoredInstance, numbers: list[int], plan: FramePlan
) -> tuple[list[bytes], str]:
    """The frames' bytes and the transfer syntax they are in."""
    store = ctx.archive.store
    located = frame_layout(store, ctx.cache, instance)
    if located is None:
        if instance.rows is None:
            raise FrameError("the instance has no pixel data")
        _, bodies, syntax = whole_object_frames(store, instance, numbers)
        if plan.decode and syntax != EXPLICIT_VR_LITTLE_ENDIAN:
            raise FrameError("this instance's frames can only be sent as stored")
        return bodies, syntax
    image, layout = located
    check_frames(layout.number_of_frames, numbers)
    if not layout.encapsulated or plan.decode:
        native = native_frames(store, instance, image, layout, numbers, ctx.cache.frames)
        return list(native), EXPLICIT_VR_LITTLE_ENDIAN
    stored = stored_frames(store, instance, layout, numbers, ctx.cache.frames)
    return list(stored), layout.transfer_syntax_uid


def _refusal(instance: StoredInstance) -> str:
    return (
        f"frames are stored in {instance.transfer_syntax_uid}; accepted: "
        "multipart/related with type application/octet-stream (transfer-syntax=* for as "
        "stored, or explicit VR little endian), or the stored syntax's image media type"
    )
