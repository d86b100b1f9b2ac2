"""C-ECHO: answers Success to a caller allowed the echo service."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from noctis.scp import status
from noctis.scp.metrics import get_metrics, result_class

if TYPE_CHECKING:
    from pynetdicom.events import Event

    from noctis.scp.scp_context import ScpContext

log = logging.getLogger(__name__)


def handle_echo(event: Event, scp_context: ScpContext) -> int | Dataset:
    try:
        return _echo(event, scp_context)
    except Exception:
        log.exception("C-ECHO handler failed")
        return status.with_comment(status.CANNOT_UNDERSTAND, "internal error (logged)")


def _echo(event: Event, scp_context: ScpContext) -> int | Dataset:
    if scp_context.access.allowed(event.assoc, "echo") is None:
        answer: int | Dataset = status.with_comment(
            status.NOT_AUTHORIZED, "this AE may not echo here"
        )
        code = status.NOT_AUTHORIZED
    else:
        answer = code = status.SUCCESS
    get_metrics().requests.labels(service="echo", result=result_class(code)).inc()
    return answer
