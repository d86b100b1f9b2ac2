"""QIDO-RS: searching studies, series and instances (PS3.18 10.6).

Matching is ``noctis.index.query.find``, the same code C-FIND uses. Results are DICOM JSON
with the attributes a viewer needs (counts, ModalitiesInStudy, RetrieveURL); an empty result
is ``200 []``. An attribute without a value is left out of a result rather than sent as
``{"vr": ...}``: OHIF's study list reads ``ModalitiesInStudy.Value.length`` whenever the
attribute is present (and Modality is), and one such study (a file without Modality) made
the whole list fail with "Data Source Connection Error". When more results exist than were
returned, a ``Warning`` header says so.
"""

from __future__ import annotations

import functools
import json
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response

from noctis.api.dicomweb.context import (
    DICOM_JSON,
    FACILITY_PARAMETER,
    PREFIX,
    ContextDep,
    WebContext,
    bad_request,
    not_acceptable,
)
from noctis.api.dicomweb.multipart import accepts_any, parse_accept
from noctis.api.dicomweb.params import ParamError, QidoParams, parse_qido
from noctis.dicom.json import tag_key, value_json
from noctis.index.query import ATTRIBUTES, Level, Match, MatchQuery, QueryError, find

router = APIRouter(prefix=PREFIX, tags=["QIDO-RS"])

_CHARACTER_SET = {tag_key(0x00080005): {"vr": "CS", "Value": ["ISO_IR 192"]}}
_AVAILABILITY = {tag_key(0x00080056): {"vr": "CS", "Value": ["ONLINE"]}}
_RETRIEVE_URL = tag_key(0x00081190)


@router.get("/studies")
def search_studies(request: Request, ctx: ContextDep) -> Response:
    return _search(ctx, request, Level.STUDY, "qido.studies", {})


@router.get("/studies/{study}/series")
def search_study_series(study: str, request: Request, ctx: ContextDep) -> Response:
    return _search(ctx, request, Level.SERIES, "qido.series", {"StudyInstanceUID": study})


@router.get("/series")
def search_series(request: Request, ctx: ContextDep) -> Response:
    return _search(ctx, request, Level.SERIES, "qido.series", {})


@router.get("/studies/{study}/series/{series}/instances")
def search_series_instances(study: str, series: str, request: Request, ctx: ContextDep) -> Response:
    scope = {"StudyInstanceUID": study, "SeriesInstanceUID": series}
    return _search(ctx, request, Level.IMAGE, "qido.instances", scope)


@router.get("/studies/{study}/instances")
def search_study_instances(study: str, request: Request, ctx: ContextDep) -> Response:
    return _search(ctx, request, Level.IMAGE, "qido.instances", {"StudyInstanceUID": study})


@router.get("/instances")
def search_instances(request: Request, ctx: ContextDep) -> Response:
    return _search(ctx, request, Level.IMAGE, "qido.instances", {})


def _search(
    ctx: WebContext, request: Request, level: Level, action: str, scope: dict[str, str]
) -> Response:
    if not accepts_any(parse_accept(request.headers.get("accept")), DICOM_JSON, "application/json"):
        raise not_acceptable("search results are available as application/dicom+json")
    try:
        params = parse_qido(request.query_params.multi_items(), level, scope=scope)
    except ParamError as exc:
        raise bad_request(str(exc)) from exc
    query = MatchQuery(
        level,
        params.filters,
        _facility_scope(ctx),
        limit=params.limit + 1,  # one more, to know whether results were left out
        offset=params.offset,
        fuzzy=params.fuzzy,
    )
    try:
        with ctx.runtime.reader() as session:
            matches = find(session, query)
    except QueryError as exc:
        raise bad_request(str(exc)) from exc
    truncated = len(matches) > params.limit
    matches = matches[: params.limit]
    ctx.record(
        action,
        "success",
        study=scope.get("StudyInstanceUID"),
        query={k: v for k, v in params.filters.items()},
        results=len(matches),
    )
    # Each result is one facility's: a UID two facilities hold is two results, and for a
    # caller who sees several, each RetrieveURL names its facility (``?facility=NAME``).
    named = ctx.sees_several_facilities
    body = [_result(match, params, ctx.base_url, named) for match in matches]
    headers = {}
    notes = list(params.notes)
    if truncated:
        notes.append(f"more than {params.limit} matches; use offset to page")
    if notes:
        host = request.url.hostname or "noctis"
        headers["Warning"] = ", ".join(f'299 {host} "{note}"' for note in notes)
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
        media_type=DICOM_JSON,
        headers=headers,
    )


def _facility_scope(ctx: WebContext) -> frozenset[int] | None:
    """The facilities to search: the caller's, narrowed to ``?facility=NAME`` if given."""
    if ctx.facility is None:
        return ctx.facility_ids
    return frozenset({ctx.facility.id})


def _result(match: Match, params: QidoParams, base_url: str, named: bool) -> dict[str, Any]:
    result: dict[str, Any] = dict(_CHARACTER_SET)
    values = match.values
    for keyword, key, vr in _columns(params.returned):
        value = values.get(keyword)
        if value is not None and value != "":
            result[key] = _index_json(vr, value)
    result.update(_AVAILABILITY)
    url = base_url + _path(match, params.level)
    if named:
        url += f"?{FACILITY_PARAMETER}={quote(match.facility, safe='')}"
    result[_RETRIEVE_URL] = {"vr": "UR", "Value": [url]}
    return dict(sorted(result.items()))


@functools.lru_cache(maxsize=256)
def _columns(returned: tuple[str, ...]) -> tuple[tuple[str, str, str], ...]:
    return tuple((kw, tag_key(ATTRIBUTES[kw].tag), ATTRIBUTES[kw].vr) for kw in returned)


def _index_json(vr: str, value: Any) -> dict[str, Any]:
    """JSON for a value as the index keeps it: str (multiple values joined by a backslash)
    or int. A fast path for the many rows of a large search."""
    if isinstance(value, int):
        return {"vr": vr, "Value": [value]}
    if vr == "PN":
        return value_json(vr, value)
    if "\\" in value:
        return value_json(vr, [v for v in value.split("\\")])
    if vr == "IS":
        return value_json(vr, value)
    return {"vr": vr, "Value": [value]}


def _path(match: Match, level: Level) -> str:
    values = match.values
    path = f"/studies/{values['StudyInstanceUID']}"
    if level in (Level.SERIES, Level.IMAGE):
        path += f"/series/{values['SeriesInstanceUID']}"
    if level is Level.IMAGE:
        path += f"/instances/{values['SOPInstanceUID']}"
    return path
