"""WADO-RS bulk data: /studies/{s}/series/{se}/instances/{i}/bulkdata/{path}.

The metadata answer points Pixel Data (7FE00010) and other large values here. Pixel Data is
sent as stored: native pixels as one part, encapsulated ones one part per frame. Whatever
the object declares, memory stays bounded: an answer up to STREAM_ABOVE is built whole (the
common case, and a status that reflects every read); a larger one is streamed, a plain
object's value read range by range, a deflated object's inflated as the answer is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydicom.dataset import Dataset

from noctis.api.dicomweb.access import audit_read, fail, locate
from noctis.api.dicomweb.context import PREFIX, ContextDep, WebContext, not_acceptable
from noctis.api.dicomweb.failures import check_reaches, ended_early, read_failures
from noctis.api.dicomweb.frames import STREAM_ABOVE
from noctis.api.dicomweb.lookup import StoredInstance
from noctis.api.dicomweb.multipart import MediaType, MultipartWriter, accepts_any, parse_accept
from noctis.api.dicomweb.negotiate import OCTET_STREAM
from noctis.api.dicomweb.objects import (
    frame_layout,
    native_frames,
    read_header,
    stored_frames,
    whole_object_frame_list,
    whole_object_source,
)
from noctis.dicom.json import find_bulk
from noctis.dicom.transcode import PixelLayout, StoredObjectTruncated, exact_reader

router = APIRouter(prefix=PREFIX, tags=["WADO-RS bulk data"])

_CHUNK = 1 << 20
Read = Callable[[int, int], bytes]


@dataclass
class BulkPart:
    length: int | None  # None: not known before it is produced (the part has no length)
    chunks: Iterator[bytes]  # produced as the answer is sent


@dataclass
class BulkAnswer:
    """The parts of one bulk data answer, sized before any of them is read."""

    size: int  # bytes, all parts together
    parts: Iterator[BulkPart]
    last_byte: int = 0  # the farthest byte of the stored object the parts need
    read: Read | None = None  # an exact ranged read of the stored object


@router.get("/studies/{study}/series/{series}/instances/{instance}/bulkdata/{path:path}")
def retrieve_bulkdata(
    study: str, series: str, instance: str, path: str, request: Request, ctx: ContextDep
) -> Response:
    found = locate(ctx, "wado.bulkdata", study, series, instance)[0]
    ranges = parse_accept(request.headers.get("accept"))
    if not (accepts_any(ranges, "multipart/related") or _multipart_octets(ranges)):
        raise not_acceptable(
            'bulk data is sent as multipart/related; type="application/octet-stream"'
        )
    writer = MultipartWriter(OCTET_STREAM)
    with read_failures(ctx, "wado.bulkdata", found):  # the statuses: see failures.py
        answer = bulk_answer(ctx, found, path.strip("/").upper())
        if answer is not None and answer.size <= STREAM_ABOVE:
            body = writer.message([(b"".join(p.chunks), None) for p in answer.parts])
        elif answer is not None:
            check_reaches(answer.read, answer.last_byte)
    if answer is None:
        raise fail(ctx, "wado.bulkdata", found, 404, f"no bulk data at {path[:80]}")
    audit_read(ctx, "wado.bulkdata", [found], path=path[:120])
    if answer.size <= STREAM_ABOVE:
        return Response(body, media_type=writer.content_type)
    parts = ended_early(_parts(writer, answer), "bulk data", found)
    return StreamingResponse(parts, media_type=writer.content_type)


def _multipart_octets(ranges: list[MediaType]) -> bool:
    return any(
        m.type == "multipart/related" and (m.param("type") or OCTET_STREAM) == OCTET_STREAM
        for m in ranges
    )


def _parts(writer: MultipartWriter, answer: BulkAnswer) -> Iterator[bytes]:
    for part in answer.parts:
        yield writer.head(None, part.length)
        sent = 0
        for chunk in part.chunks:
            sent += len(chunk)
            yield chunk
        if part.length is not None and sent != part.length:
            raise StoredObjectTruncated(f"a part of {sent} bytes; {part.length} announced")
        yield b"\r\n"
    yield writer.end()


def bulk_answer(ctx: WebContext, instance: StoredInstance, path: str) -> BulkAnswer | None:
    """The answer for bulk data ``path`` of ``instance``, its parts not yet read; None when
    the instance has nothing there."""
    store = ctx.runtime.store
    if path != "7FE00010":
        element = find_bulk(read_header(store, instance), path)
        if element is None or not isinstance(element.value, bytes):
            return None
        value = element.value
        return BulkAnswer(len(value), iter([BulkPart(len(value), iter([value]))]))
    located = frame_layout(store, ctx.cache, instance)
    if located is None:
        if not instance.rows:
            return None
        return _whole_object_pixels(ctx, instance)
    image, layout = located
    read = exact_reader(lambda o, n: store.get_range(instance.object_key, o, n))
    if layout.encapsulated:
        sizes = [layout.frame_size(i) for i in range(layout.number_of_frames)]
        parts = (
            BulkPart(size, stored_frames(store, instance, layout, [number]))
            for number, size in enumerate(sizes, start=1)
        )
        last_byte = max((o + n for frame in layout.frames for o, n in frame), default=0)
        return BulkAnswer(sum(sizes), parts, last_byte, read)
    start, end = layout.frames[0][0][0], sum(layout.frames[-1][-1])
    if not (layout.swap or layout.packed_pixels):
        # Plain native pixels: the frames lie end to end, read range by range.
        part = BulkPart(end - start, _ranges(read, start, end))
    else:
        numbers = list(range(1, layout.number_of_frames + 1))
        part = BulkPart(None, native_frames(store, instance, image, layout, numbers))
    return BulkAnswer(end - start, iter([part]), end, read)


def _whole_object_pixels(ctx: WebContext, instance: StoredInstance) -> BulkAnswer:
    """Pixel Data of an object without a pixel data offset (deflated): read front to back,
    a deflated one inflated as the answer is sent, keeping about a chunk."""
    store = ctx.runtime.store
    image, layout, read = whole_object_source(store, instance, max_inflated=ctx.max_inflated)
    numbers = list(range(1, layout.number_of_frames + 1))
    if layout.encapsulated:
        sizes = [layout.frame_size(i) for i in range(len(numbers))]
        parts = (
            BulkPart(size, _each_frame(image, layout, read, [number]))
            for number, size in zip(numbers, sizes, strict=True)
        )
        return BulkAnswer(sum(sizes), parts)
    start, end = layout.frames[0][0][0], sum(layout.frames[-1][-1])
    if layout.swap or layout.packed_pixels:
        part = BulkPart(None, _each_frame(image, layout, read, numbers))
    else:
        part = BulkPart(end - start, _ranges(read, start, end))
    return BulkAnswer(end - start, iter([part]))


def _each_frame(
    image: Dataset, layout: PixelLayout, read: Read, numbers: list[int]
) -> Iterator[bytes]:
    # whole_object_frame_list keeps the frames it gives, for reordering: asked one at a
    # time, it keeps one
    for number in numbers:
        yield from whole_object_frame_list(image, layout, read, [number])


def _ranges(read: Read, start: int, end: int) -> Iterator[bytes]:
    for offset in range(start, end, _CHUNK):
        yield read(offset, min(_CHUNK, end - offset))
