"""WADO-RS instances and bulk data.

Instances stream from the object store exactly as they were received (byte-identical), one
``application/dicom`` part each; only a client that asks for explicit VR little endian gets
instances stored otherwise re-encoded (decompressed) for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from noctis.api.dicomweb.access import audit_read, damaged, fail, locate
from noctis.api.dicomweb.context import PREFIX, ContextDep, WebContext, not_acceptable
from noctis.api.dicomweb.lookup import StoredInstance
from noctis.api.dicomweb.multipart import MediaType, MultipartWriter, accepts_any, parse_accept
from noctis.api.dicomweb.negotiate import DICOM, OCTET_STREAM, InstancePlan, plan_instances
from noctis.api.dicomweb.objects import (
    frame_layout,
    native_frames,
    read_header,
    stored_frames,
    whole_object_frames,
)
from noctis.dicom.deflated import DEFLATED, HeaderTooLarge
from noctis.dicom.json import find_bulk
from noctis.dicom.reencode import inflated_as_explicit, to_explicit_little_endian
from noctis.dicom.transcode import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    FrameError,
    StoredObjectTruncated,
    exact_reader,
)
from noctis.storage import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)
router = APIRouter(prefix=PREFIX, tags=["WADO-RS"])

_CHUNK = 1 << 20


@router.get("/studies/{study}")
def retrieve_study(study: str, request: Request, ctx: ContextDep) -> Response:
    return _retrieve(ctx, request, "wado.study", locate(ctx, "wado.study", study))


@router.get("/studies/{study}/series/{series}")
def retrieve_series(study: str, series: str, request: Request, ctx: ContextDep) -> Response:
    found = locate(ctx, "wado.series", study, series)
    return _retrieve(ctx, request, "wado.series", found)


@router.get("/studies/{study}/series/{series}/instances/{instance}")
def retrieve_instance(
    study: str, series: str, instance: str, request: Request, ctx: ContextDep
) -> Response:
    found = locate(ctx, "wado.instance", study, series, instance)
    return _retrieve(ctx, request, "wado.instance", found)


def _retrieve(
    ctx: WebContext, request: Request, action: str, instances: list[StoredInstance]
) -> Response:
    stored = {i.transfer_syntax_uid for i in instances}
    plan = plan_instances(parse_accept(request.headers.get("accept")), stored)
    if plan is None or (plan.single_part and len(instances) != 1):
        raise not_acceptable(
            'instances are sent as multipart/related; type="application/dicom" '
            f"(transfer-syntax=* or {EXPLICIT_VR_LITTLE_ENDIAN}); stored: {', '.join(stored)}"
        )
    audit_read(ctx, action, instances, transfer_syntax=plan.transfer_syntax)
    store = ctx.archive.store
    if plan.single_part:
        only = instances[0]
        return StreamingResponse(
            store.iter_chunks(only.object_key, _CHUNK),
            media_type=f"{DICOM}; transfer-syntax={only.transfer_syntax_uid}",
            headers={"Content-Length": str(only.size)},
        )
    writer = MultipartWriter(DICOM)
    return StreamingResponse(_parts(store, writer, instances, plan), media_type=writer.content_type)


def _parts(
    store: ObjectStore, writer: MultipartWriter, instances: list[StoredInstance], plan: InstancePlan
) -> Iterator[bytes]:
    for instance in instances:
        try:
            if plan.transfer_syntax and instance.transfer_syntax_uid != plan.transfer_syntax:
                yield from _transcoded(store, writer, instance, plan.transfer_syntax)
                continue
            syntax = instance.transfer_syntax_uid
            yield writer.head(f"{DICOM}; transfer-syntax={syntax}", instance.size)
            sent = 0
            for chunk in store.iter_chunks(instance.object_key, _CHUNK):
                sent += len(chunk)
                yield chunk
            if sent != instance.size:
                raise StoredObjectTruncated(f"{sent} bytes stored, {instance.size} indexed")
            yield b"\r\n"
        except (ObjectNotFound, StoredObjectTruncated) as exc:
            # The response has started: all we can do is end it short (no closing delimiter),
            # so the client sees a truncated message instead of a silently short instance.
            log.error("object %s of instance %s: %r", instance.object_key, instance.sop_uid, exc)
            raise
    yield writer.end()


def _transcoded(
    store: ObjectStore, writer: MultipartWriter, instance: StoredInstance, syntax: str
) -> Iterator[bytes]:
    """One part re-encoded as explicit VR little endian. A deflated object only needs
    inflating, streamed chunk by chunk (its size unknown, so the part has no length); others
    are decoded whole."""
    content_type = f"{DICOM}; transfer-syntax={syntax}"
    if instance.transfer_syntax_uid == DEFLATED:
        yield writer.head(content_type)
        yield from inflated_as_explicit(store.iter_chunks(instance.object_key, _CHUNK))
        yield b"\r\n"
        return
    yield writer.part(to_explicit_little_endian(store.get(instance.object_key)), content_type)


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
    try:
        bodies = _bulk(ctx, found, path.strip("/").upper())
    except FrameError as exc:
        raise fail(ctx, "wado.bulkdata", found, 404, str(exc)) from exc
    except ObjectNotFound as exc:
        raise fail(ctx, "wado.bulkdata", found, 503, "the stored object is unavailable") from exc
    except StoredObjectTruncated as exc:
        raise damaged(ctx, "wado.bulkdata", found, exc) from exc
    except HeaderTooLarge as exc:
        raise fail(ctx, "wado.bulkdata", found, 500, str(exc)) from exc
    if bodies is None:
        raise fail(ctx, "wado.bulkdata", found, 404, f"no bulk data at {path[:80]}")
    audit_read(ctx, "wado.bulkdata", [found], path=path[:120])
    writer = MultipartWriter(OCTET_STREAM)
    return Response(writer.message([(b, None) for b in bodies]), media_type=writer.content_type)


def _multipart_octets(ranges: list[MediaType]) -> bool:
    return any(
        m.type == "multipart/related" and (m.param("type") or OCTET_STREAM) == OCTET_STREAM
        for m in ranges
    )


def _bulk(ctx: WebContext, instance: StoredInstance, path: str) -> list[bytes] | None:
    store = ctx.archive.store
    if path == "7FE00010":
        located = frame_layout(store, ctx.cache, instance)
        if located is None:
            if not instance.rows:
                return None
            return whole_object_frames(store, instance, None)[1]
        image, layout = located
        if not (layout.encapsulated or layout.swap or layout.packed_pixels):
            # Plain native pixels: the frames lie end to end, one read for all of them.
            start, end = layout.frames[0][0][0], sum(layout.frames[-1][-1])
            read = exact_reader(lambda o, n: store.get_range(instance.object_key, o, n))
            return [read(start, end - start)]
        numbers = list(range(1, layout.number_of_frames + 1))
        if layout.encapsulated:
            return list(stored_frames(store, instance, layout, numbers))
        return [b"".join(native_frames(store, instance, image, layout, numbers))]
    element = find_bulk(read_header(store, instance), path)
    if element is None or not isinstance(element.value, bytes):
        return None
    return [element.value]
