"""Conditions as the Kubernetes API conventions have them, merged without losing history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

READY = "Ready"
SYNCED = "Synced"
AVAILABLE = "Available"
QUOTA_EXCEEDED = "QuotaExceeded"
CONSISTENT = "Consistent"  # the consistency check finds no indexed instance without its object


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Cond:
    type: str
    status: bool | None  # None is "Unknown"
    reason: str
    message: str = ""

    @property
    def status_text(self) -> str:
        return "Unknown" if self.status is None else str(self.status)


def merge_conditions(
    current: list[dict[str, Any]] | None,
    updates: list[Cond],
    generation: int,
    *,
    timestamp: str | None = None,
) -> list[dict[str, Any]]:
    """The conditions after ``updates``: lastTransitionTime moves only when status changes."""
    stamp = timestamp or now()
    by_type = {c["type"]: dict(c) for c in current or [] if "type" in c}
    for update in updates:
        previous = by_type.get(update.type)
        changed = previous is None or previous.get("status") != update.status_text
        by_type[update.type] = {
            "type": update.type,
            "status": update.status_text,
            "reason": update.reason,
            "message": update.message[:1024],
            "lastTransitionTime": stamp if changed else previous.get("lastTransitionTime", stamp),  # type: ignore[union-attr]
            "observedGeneration": generation,
        }
    order = {t: i for i, t in enumerate([READY, SYNCED, AVAILABLE])}
    return sorted(by_type.values(), key=lambda c: (order.get(c["type"], 99), c["type"]))


def condition(status: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for item in (status or {}).get("conditions", []) or []:
        if item.get("type") == type_:
            return dict(item)
    return None
