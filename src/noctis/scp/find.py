"""C-FIND for Patient Root and Study Root, at PATIENT, STUDY, SERIES and IMAGE level.

Matching is the index's (`noctis.index.query.find`, shared with QIDO-RS), always limited to
the caller's facility. The handler is a generator: pynetdicom sends each yielded
(status, identifier) as a response.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from sqlalchemy.exc import SQLAlchemyError

from noctis.index.query import Match, QueryError, find
from noctis.scp import status
from noctis.scp.contexts import FIND_MODELS
from noctis.scp.identifiers import (
    IdentifierInvalid,
    IdentifierUndecodable,
    ParsedIdentifier,
    decode_identifier,
    parse_identifier,
    response_identifier,
)
from noctis.scp.metrics import get_metrics, result_class

if TYPE_CHECKING:
    from pynetdicom.events import Event

    from noctis.scp.runtime import ScpRuntime

log = logging.getLogger(__name__)

FindResponse = tuple[int | Dataset, Dataset | None]


def handle_find(event: Event, runtime: ScpRuntime) -> Iterator[FindResponse]:
    """EVT_C_FIND handler."""
    final = status.SUCCESS
    try:
        for answer in _find(event, runtime):
            code, _ = answer
            final = code if isinstance(code, int) else int(code.Status)
            yield answer
    except Exception:
        log.exception("C-FIND handler failed")
        final = status.FIND_INTERNAL_ERROR
        yield status.with_comment(final, "internal error (logged)"), None
    finally:
        get_metrics().requests.labels(service="find", result=result_class(final)).inc()


def _find(event: Event, runtime: ScpRuntime) -> Iterator[FindResponse]:
    caller = runtime.access.allowed(event.assoc, "find")
    if caller is None:
        yield status.with_comment(status.NOT_AUTHORIZED, "this AE may not query here"), None
        return
    try:
        parsed = parse_identifier(decode_identifier(event), _root(event))
        matches = _matches(runtime, parsed, caller.facility_id)
    except IdentifierUndecodable as exc:
        yield status.with_comment(status.FIND_UNDECODABLE_IDENTIFIER, str(exc)), None
        return
    except (IdentifierInvalid, QueryError) as exc:
        yield status.with_comment(status.DOES_NOT_MATCH_SOP_CLASS, str(exc)), None
        return
    except _IndexDown as exc:
        yield status.with_comment(status.OUT_OF_RESOURCES, str(exc)), None
        return
    except Exception:
        log.exception("C-FIND from %s failed", caller.ae_title)
        yield status.with_comment(status.FIND_INTERNAL_ERROR, "internal error (logged)"), None
        return
    runtime.audit.queried(event.assoc, caller, parsed.level, dict(parsed.filters), len(matches))
    pending = status.PENDING_WITH_UNSUPPORTED_KEYS if parsed.unsupported else status.PENDING
    for match in matches:
        if event.is_cancelled:
            yield status.CANCEL, None
            return
        yield pending, response_identifier(parsed, match.values, runtime.ae_title)
    yield status.SUCCESS, None


class _IndexDown(Exception):
    pass


def _matches(runtime: ScpRuntime, parsed: ParsedIdentifier, facility_id: int) -> list[Match]:
    try:
        with runtime.archive.sessions() as session:
            return find(session, parsed.match_query(facility_id))
    except SQLAlchemyError as exc:
        log.warning("C-FIND: index unavailable: %s", exc)
        raise _IndexDown(f"index unavailable: {type(exc).__name__}") from exc


def _root(event: Event) -> str:
    return FIND_MODELS.get(str(event.request.AffectedSOPClassUID), "STUDY")
