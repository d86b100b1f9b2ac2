"""WADO-RS frames: /studies/{s}/series/{se}/instances/{i}/frames/{list}.

Frames are sent in the stored transfer syntax when the client accepts it (OHIF asks with
``transfer-syntax=*``), otherwise decoded to explicit VR little endian. Each part's
``Content-Type`` names its ``transfer-syntax``: strict clients decode by it.

Whatever the frame list, memory stays bounded: a frame asked twice is sent once, a request
may ask for at most ``frames_per_request`` distinct frames and ``frame_mb_per_request`` MB
(known from the layout before anything is read), and an answer larger than STREAM_ABOVE is
streamed frame by frame instead of built whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydicom.dataset import Dataset

from noctis.api.dicomweb.access import audit_read, fail, locate
from noctis.api.dicomweb.context import PREFIX, ContextDep, WebContext, bad_request
from noctis.api.dicomweb.failures import (
    FrameNotAcceptable,
    FrameNotFound,
    check_reaches,
    ended_early,
    read_failures,
)
from noctis.api.dicomweb.lookup import StoredInstance
from noctis.api.dicomweb.multipart import MultipartWriter, parse_accept
from noctis.api.dicomweb.negotiate import FramePlan, plan_frames
from noctis.api.dicomweb.objects import (
    check_frames,
    frame_layout,
    native_frames,
    stored_frames,
    whole_object_frame_list,
    whole_object_source,
)
from noctis.dicom.transcode import EXPLICIT_VR_LITTLE_ENDIAN, PixelLayout, exact_reader

router = APIRouter(prefix=PREFIX, tags=["WADO-RS frames"])

# Answers up to this size are built in memory (one frame, or a few: the common case, and a
# status that still reflects every read); larger ones are streamed.
STREAM_ABOVE = 8 << 20


def parse_frame_list(text: str, limit: int | None = None) -> list[int]:
    """``1,2,3`` (1-based) as a list without repeats, in first-asked order; 400 for anything
    else, or for more than ``limit`` distinct frames."""
    try:
        numbers = [int(part) for part in text.replace("%2C", ",").split(",") if part.strip()]
    except ValueError as exc:
        raise bad_request(f"frame list must be comma-separated numbers, got {text[:60]!r}") from exc
    if not numbers or any(n < 1 for n in numbers):
        raise bad_request("frame numbers start at 1")
    distinct = list(dict.fromkeys(numbers))
    if limit is not None and len(distinct) > limit:
        raise bad_request(
            f"{len(distinct)} distinct frames asked; at most {limit} per request "
            "(ask for the rest in further requests)"
        )
    return distinct


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}")
def retrieve_frames(
    study: str, series: str, instance: str, frames: str, request: Request, ctx: ContextDep
) -> Response:
    settings = ctx.settings
    numbers = parse_frame_list(frames, settings.frames_per_request)
    found = locate(ctx, "wado.frames", study, series, instance)[0]
    ranges = parse_accept(request.headers.get("accept"))
    plan = plan_frames(ranges, found.transfer_syntax_uid)
    if plan is None:
        raise fail(ctx, "wado.frames", found, 406, _refusal(found))
    with read_failures(ctx, "wado.frames", found):  # the statuses: see failures.py
        selection = select_frames(ctx, found, numbers, plan)
        byte_limit = settings.frame_mb_per_request << 20
        if selection.size > byte_limit:
            raise fail(ctx, "wado.frames", found, 413, _too_large(selection.size, byte_limit))
        writer = MultipartWriter(plan.part_type)
        part_type = f"{plan.part_type}; transfer-syntax={selection.syntax}"
        if selection.size <= STREAM_ABOVE or selection.in_memory:
            body = writer.message([(data, part_type) for data in selection.frames])
            audit_read(ctx, "wado.frames", [found], frames=frames[:200])
            return Response(body, media_type=writer.content_type)
        check_reaches(selection.read, selection.last_byte)
    audit_read(ctx, "wado.frames", [found], frames=frames[:200])
    parts = ended_early(_parts(writer, part_type, selection), "frames", found)
    return StreamingResponse(parts, media_type=writer.content_type)


@dataclass
class FrameSelection:
    """The frames one request asked for, sized before any is read."""

    syntax: str  # the transfer syntax they are sent in
    size: int  # bytes, all frames together (native: an upper bound)
    frames: Iterator[bytes]
    in_memory: bool = False  # the object was read whole: nothing left to stream
    last_byte: int = 0  # the farthest byte of the object the frames need
    read: Callable[[int, int], bytes] | None = None  # an exact ranged read of the object


def select_frames(
    ctx: WebContext, instance: StoredInstance, numbers: list[int], plan: FramePlan
) -> FrameSelection:
    store = ctx.runtime.store
    located = frame_layout(store, ctx.cache, instance)
    if located is None:
        if instance.rows is None:
            raise FrameNotFound("the instance has no pixel data")
        image, layout, read = whole_object_source(store, instance, max_inflated=ctx.max_inflated)
        check_frames(layout.number_of_frames, numbers)
        if layout.encapsulated:
            syntax, size = layout.transfer_syntax_uid, _stored_size(layout, numbers)
            if plan.decode:
                raise FrameNotAcceptable("this instance's frames can only be sent as stored")
        else:
            syntax, size = EXPLICIT_VR_LITTLE_ENDIAN, len(numbers) * _native_size(image)
        # Read front to back (a deflated object is inflated as it goes), so built whole:
        # within the request's byte limit, checked before anything is read.
        frames = whole_object_frame_list(image, layout, read, numbers)
        return FrameSelection(syntax, size, frames, in_memory=True)
    image, layout = located
    check_frames(layout.number_of_frames, numbers)
    last_byte = max(o + n for number in numbers for o, n in layout.frames[number - 1])
    read = exact_reader(lambda o, n: store.get_range(instance.object_key, o, n))
    if not layout.encapsulated or plan.decode:
        return FrameSelection(
            EXPLICIT_VR_LITTLE_ENDIAN,
            len(numbers) * _native_size(image),
            native_frames(store, instance, image, layout, numbers, ctx.cache.frames),
            last_byte=last_byte,
            read=read,
        )
    return FrameSelection(
        layout.transfer_syntax_uid,
        _stored_size(layout, numbers),
        stored_frames(store, instance, layout, numbers, ctx.cache.frames),
        last_byte=last_byte,
        read=read,
    )


def _stored_size(layout: PixelLayout, numbers: list[int]) -> int:
    return sum(layout.frame_size(n - 1) for n in numbers)


def _native_size(image: Dataset) -> int:
    """Bytes of one frame as native explicit VR little endian."""
    pixels = int(image.Rows) * int(image.Columns) * int(image.get("SamplesPerPixel") or 1)
    bits = int(image.BitsAllocated)
    return (pixels + 7) // 8 if bits == 1 else pixels * ((bits + 7) // 8)


def _parts(writer: MultipartWriter, part_type: str, selection: FrameSelection) -> Iterator[bytes]:
    for data in selection.frames:
        yield writer.part(data, part_type)
    yield writer.end()


def _too_large(size: int, limit: int) -> str:
    return (
        f"the frames asked for come to {size >> 20} MB; at most {limit >> 20} MB per request "
        "(ask for fewer frames per request)"
    )


def _refusal(instance: StoredInstance) -> str:
    return (
        f"frames are stored in {instance.transfer_syntax_uid}; accepted: "
        "multipart/related with type application/octet-stream (transfer-syntax=* for as "
        "stored, or explicit VR little endian), or the stored syntax's image media type"
    )
