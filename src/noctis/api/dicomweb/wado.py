"""WADO-RS instances.

Instances stream from the object store exactly as they were received (byte-identical), one
``application/dicom`` part each; only a client that asks for explicit VR little endian gets
instances stored otherwise re-encoded for it, as they are sent: a deflated one inflated, a
compressed one decoded frame by frame (about one frame in memory), an implicit VR one's
pixel data copied range by range.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from noctis.api.dicomweb.access import audit_read, locate
from noctis.api.dicomweb.context import PREFIX, ContextDep, WebContext, not_acceptable
from noctis.api.dicomweb.failures import ended_early, read_failures
from noctis.api.dicomweb.lookup import StoredInstance
from noctis.api.dicomweb.multipart import MultipartWriter, parse_accept
from noctis.api.dicomweb.negotiate import DICOM, InstancePlan, plan_instances
from noctis.api.dicomweb.objects import frame_layout
from noctis.dicom.deflated import DEFLATED
from noctis.dicom.reencode import (
    DecodedInstance,
    decoded_as_explicit,
    implicit_as_explicit,
    inflated_as_explicit,
    to_explicit_little_endian,
)
from noctis.dicom.transcode import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    NATIVE_SYNTAXES,
    StoredObjectTruncated,
    exact_reader,
)

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
    store = ctx.runtime.store
    if plan.single_part:
        only = instances[0]
        return StreamingResponse(
            store.iter_chunks(only.object_key, _CHUNK),
            media_type=f"{DICOM}; transfer-syntax={only.transfer_syntax_uid}",
            headers={"Content-Length": str(only.size)},
        )
    prepared: dict[str, DecodedInstance | None] = {}
    if len(instances) == 1 and plan.transfer_syntax not in (None, instances[0].transfer_syntax_uid):
        # One instance to re-encode: its header and the end of its pixel data (a compressed
        # one's first frame too) are read before the answer starts, so a damaged object is
        # a status, not a cut-off 200.
        only = instances[0]
        with read_failures(ctx, action, only):  # the statuses: see failures.py
            prepared[only.object_key] = _decoded(ctx, only)
    writer = MultipartWriter(DICOM)
    parts = _parts(ctx, writer, instances, plan, prepared)
    return StreamingResponse(parts, media_type=writer.content_type)


def _parts(
    ctx: WebContext,
    writer: MultipartWriter,
    instances: list[StoredInstance],
    plan: InstancePlan,
    prepared: dict[str, DecodedInstance | None],
) -> Iterator[bytes]:
    for instance in instances:
        # The response has started: an error ends it short (no closing delimiter), so the
        # client sees a truncated message instead of a silently short instance.
        yield from ended_early(_part(ctx, writer, instance, plan, prepared), "instance", instance)
    yield writer.end()


def _part(
    ctx: WebContext,
    writer: MultipartWriter,
    instance: StoredInstance,
    plan: InstancePlan,
    prepared: dict[str, DecodedInstance | None],
) -> Iterator[bytes]:
    if plan.transfer_syntax and instance.transfer_syntax_uid != plan.transfer_syntax:
        yield from _transcoded(ctx, writer, instance, plan.transfer_syntax, prepared)
        return
    syntax = instance.transfer_syntax_uid
    yield writer.head(f"{DICOM}; transfer-syntax={syntax}", instance.size)
    sent = 0
    for chunk in ctx.runtime.store.iter_chunks(instance.object_key, _CHUNK):
        sent += len(chunk)
        yield chunk
    if sent != instance.size:
        raise StoredObjectTruncated(f"{sent} bytes stored, {instance.size} indexed")
    yield b"\r\n"


def _transcoded(
    ctx: WebContext,
    writer: MultipartWriter,
    instance: StoredInstance,
    syntax: str,
    prepared: dict[str, DecodedInstance | None],
) -> Iterator[bytes]:
    """One part re-encoded as explicit VR little endian. A deflated object only needs
    inflating, streamed chunk by chunk (its size unknown, so the part has no length); a
    compressed one is decoded frame by frame as it is sent, an implicit VR one's pixel data
    copied range by range; others (big endian, odd ones) are re-encoded whole."""
    store = ctx.runtime.store
    content_type = f"{DICOM}; transfer-syntax={syntax}"
    if instance.transfer_syntax_uid == DEFLATED:
        yield writer.head(content_type)
        chunks = store.iter_chunks(instance.object_key, _CHUNK)
        yield from inflated_as_explicit(chunks, ctx.max_inflated)
        yield b"\r\n"
        return
    key = instance.object_key
    decoded = prepared.pop(key) if key in prepared else _decoded(ctx, instance)
    if decoded is None:
        yield writer.part(to_explicit_little_endian(store.get(instance.object_key)), content_type)
        return
    yield writer.head(content_type, decoded.length) + decoded.head
    yield from decoded.frames
    yield b"\r\n"


def _decoded(ctx: WebContext, instance: StoredInstance) -> DecodedInstance | None:
    """An instance ready to be re-encoded as it is sent (its header read, the end of its
    pixel data checked, a compressed one's first frame decoded): compressed and implicit VR
    little endian ones; None for others (re-encoded whole)."""
    offset, syntax = instance.pixel_data_offset, instance.transfer_syntax_uid
    if offset is None or (syntax in NATIVE_SYNTAXES and syntax != IMPLICIT_VR_LITTLE_ENDIAN):
        return None
    store = ctx.runtime.store
    read = exact_reader(lambda o, n: store.get_range(instance.object_key, o, n))
    if syntax == IMPLICIT_VR_LITTLE_ENDIAN:
        return implicit_as_explicit(read, offset, instance.size)
    located = frame_layout(store, ctx.cache, instance)
    if located is None:
        return None
    return decoded_as_explicit(read, offset, instance.size, located[1])
