"""Work claimed in the index under a lease (routing's transfers, notification deliveries):
rows with ``state``, ``claim``, ``claimed_until``, ``next_attempt_at`` and ``last_error``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

TAKEN_BACK = "taken back: the worker sending it stopped before it finished"


def take_back_stale(
    session: Session, model: Any, *, sending: str, pending: str, now: datetime
) -> int:
    """Rows a worker held (state ``sending``) past their lease are ``pending`` and due again
    (the attempt it made stays counted); how many."""
    result: Any = session.execute(
        update(model)
        .where(model.state == sending, model.claimed_until < now)
        .values(
            state=pending,
            claim=None,
            claimed_until=None,
            next_attempt_at=now,
            last_error=TAKEN_BACK,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)
