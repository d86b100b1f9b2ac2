"""WADO-RS metadata: study, series and instance headers as DICOM JSON.

Pixel data and other large binary values are ``BulkDataURI`` references. Each instance's JSON
is built once from its stored header (read up to the pixel data, never the pixels) and cached
by object key, so a 300-instance series is one index query and a join of cached fragments.
On cache misses the series metadata bundle the worker writes is read first (one object
instead of one header per instance); what it lacks is read from the headers.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
from urllib.parse import quote

from fastapi import APIRouter, Request, Response

from noctis.api.dicomweb.access import audit_read, locate
from noctis.api.dicomweb.context import (
    DICOM_JSON,
    FACILITY_PARAMETER,
    PREFIX,
    ContextDep,
    WebContext,
    not_acceptable,
)
from noctis.api.dicomweb.lookup import StoredInstance
from noctis.api.dicomweb.multipart import accepts_any, parse_accept
from noctis.api.dicomweb.objects import build_fragment, bundled_fragments, metadata_document
from noctis.storage import ObjectNotFound, StorageUnavailable

log = logging.getLogger(__name__)
GZIP_MINIMUM = 32 * 1024
router = APIRouter(prefix=PREFIX, tags=["WADO-RS metadata"])


@router.get("/studies/{study}/metadata")
def study_metadata(study: str, request: Request, ctx: ContextDep) -> Response:
    _check_accept(request)
    return _metadata(ctx, request, "wado.metadata", locate(ctx, "wado.metadata", study))


@router.get("/studies/{study}/series/{series}/metadata")
def series_metadata(study: str, series: str, request: Request, ctx: ContextDep) -> Response:
    _check_accept(request)
    found = locate(ctx, "wado.metadata", study, series)
    return _metadata(ctx, request, "wado.metadata", found)


@router.get("/studies/{study}/series/{series}/instances/{instance}/metadata")
def instance_metadata(
    study: str, series: str, instance: str, request: Request, ctx: ContextDep
) -> Response:
    _check_accept(request)
    found = locate(ctx, "wado.metadata", study, series, instance)
    return _metadata(ctx, request, "wado.metadata", found)


def _check_accept(request: Request) -> None:
    ranges = parse_accept(request.headers.get("accept"))
    if not accepts_any(ranges, DICOM_JSON, "application/json"):
        raise not_acceptable("metadata is available as application/dicom+json")


def _metadata(
    ctx: WebContext, request: Request, action: str, instances: list[StoredInstance]
) -> Response:
    fragments = _fragments(ctx, instances)
    audit_read(ctx, action, instances)
    body = metadata_document(fragments, ctx.base_url)
    if ctx.facility is not None:
        body = _bulk_uris_in_facility(body, ctx.facility.name)
    if len(body) < GZIP_MINIMUM or "gzip" not in request.headers.get("accept-encoding", ""):
        return Response(body, media_type=DICOM_JSON)
    # Browsers ask for gzip: a series' JSON shrinks ~10x. Compressed once per distinct
    # content (the object keys), base URL and facility chosen (its bulk data URIs name it),
    # since viewers fetch the same series again.
    chosen = ctx.facility.name if ctx.facility is not None else ""
    key = hashlib.sha256(
        "\n".join([ctx.base_url, chosen, *(i.object_key for i in instances)]).encode()
    ).hexdigest()
    compressed = ctx.cache.compressed.get(key)
    if compressed is None:
        compressed = gzip.compress(body, compresslevel=1, mtime=0)
        ctx.cache.compressed.put(key, compressed)
    return Response(
        compressed,
        media_type=DICOM_JSON,
        headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"},
    )


_BULK_URI = re.compile(rb'("BulkDataURI":"[^"]*)"')


def _bulk_uris_in_facility(body: bytes, facility: str) -> bytes:
    """Bulk data URIs that name the facility chosen, so following them gives its data (a
    UID two facilities hold is otherwise answered 409)."""
    parameter = f"?{FACILITY_PARAMETER}={quote(facility, safe='')}".encode()
    return _BULK_URI.sub(lambda m: m.group(1) + parameter + b'"', body)


def _fragments(ctx: WebContext, instances: list[StoredInstance]) -> list[bytes]:
    """The instances' fragments: cached, else from their series' bundles, else headers."""
    store, cache = ctx.runtime.store, ctx.cache
    known: dict[str, bytes] = {}
    for instance in instances:
        cached = cache.metadata.get(instance.object_key)
        if cached is not None:
            known[instance.object_key] = cached
    missing = [i for i in instances if i.object_key not in known]
    if missing:
        known.update(bundled_fragments(store, cache, missing))
    fragments = []
    for instance in instances:
        fragment = known.get(instance.object_key)
        if fragment is None:
            fragment = _from_header(ctx, instance)
        if fragment is not None:
            fragments.append(fragment)
    return fragments


def _from_header(ctx: WebContext, instance: StoredInstance) -> bytes | None:
    try:
        return build_fragment(ctx.runtime.store, ctx.cache, instance)
    except ObjectNotFound:
        # An index row whose object is gone is an operations problem, not the client's;
        # the rest of the study is still worth showing.
        log.error("object %s of instance %s is missing", instance.object_key, instance.sop_uid)
    except StorageUnavailable:
        raise  # 503 for the whole request, not a study with holes
    except Exception:
        log.exception("cannot build the metadata of instance %s", instance.sop_uid)
    return None
