"""The operator's per-process state, status writing, and how a failed reconcile is reported."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from noctis.operator.builders.archive import Images
from noctis.operator.conditions import READY, Cond, merge_conditions
from noctis.operator.ensure import Ensured
from noctis.operator.errors import Blocked, SpecInvalid
from noctis.operator.kinds import Resource
from noctis.operator.kube import ApiException, Kube
from noctis.operator.settings import OperatorSettings

log = logging.getLogger("noctis.operator")

EventFn = Callable[[dict[str, Any], str, str, str], None]


def kopf_event(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """Post a Kubernetes Event through kopf's poster (batched, retried, rate-limited)."""
    try:
        kopf.event(kopf.Body(cast(kopf.RawBody, body)), type=type_, reason=reason, message=message)
    except LookupError:  # outside a running operator (unit tests): log only
        log.info("event %s %s: %s", type_, reason, message)


@dataclass
class Operator:
    settings: OperatorSettings
    kube: Kube
    images: Images
    events: EventFn = kopf_event
    engine: Engine | None = None
    sessions: sessionmaker[Session] | None = None
    _locks: dict[tuple[str, str, str], threading.Lock] = field(default_factory=dict)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def serialized(self, kind: str, namespace: str, name: str) -> Iterator[None]:
        """One reconcile of an object at a time, whichever handler or child event asked."""
        key = (kind, namespace, name)
        with self._locks_guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield

    def forget(self, kind: str, namespace: str, name: str) -> None:
        with self._locks_guard:
            self._locks.pop((kind, namespace, name), None)

    def index_sessions(self) -> sessionmaker[Session]:
        if self.sessions is None:
            raise Blocked(
                "IndexNotConfigured",
                "the operator has no index database (NOCTIS_DATABASE_URL) to sync facilities into",
                delay=300,
            )
        return self.sessions

    def write_status(
        self,
        resource: Resource,
        body: dict[str, Any],
        fields: dict[str, Any],
        conditions: list[Cond],
    ) -> dict[str, Any] | None:
        """Merge our conditions and fields into the object's status (skip if unchanged)."""
        meta = body["metadata"]
        current = self.kube.get(resource, meta.get("namespace"), meta["name"])
        if current is None or current["metadata"].get("uid") != meta.get("uid"):
            return None  # gone, or replaced by a new object of the same name
        generation = int(meta.get("generation") or 0)
        status = dict(current.get("status") or {})
        merged = {
            **fields,
            "observedGeneration": generation,
            "conditions": merge_conditions(status.get("conditions"), conditions, generation),
        }
        if all(status.get(k) == v for k, v in merged.items()):
            return current
        return self.kube.patch_status(resource, meta.get("namespace"), meta["name"], merged)

    def report_changes(
        self, body: dict[str, Any], results: Iterable[Ensured], *, apply_always: bool
    ) -> None:
        """Normal Events for children created or updated, and for drift we corrected."""
        for result in results:
            what = f"{result.obj['kind']} {result.obj['metadata']['name']}"
            if result.action == "created":
                self.events(body, "Normal", "Created", f"created {what}")
            elif result.action == "patched" and apply_always:
                self.events(body, "Normal", "Updated", f"updated {what}")
            elif result.action == "patched":
                paths = ", ".join(result.drift[:5])
                self.events(body, "Normal", "DriftCorrected", f"restored {what} ({paths})")

    def fail(
        self,
        resource: Resource,
        body: dict[str, Any],
        exc: SpecInvalid | Blocked,
        extra: list[Cond] | None = None,
    ) -> None:
        """Ready=False with the reason, and a Warning Event."""
        reason = exc.reason
        message = str(exc)
        conditions = [Cond(READY, False, reason, message), *(extra or [])]
        try:
            self.write_status(resource, body, {}, conditions)
        except ApiException as api_exc:
            log.warning("cannot write status of %s: %s", body["metadata"]["name"], api_exc)
        self.events(body, "Warning", reason, message)


def guarded(
    op: Operator,
    resource: Resource,
    body: dict[str, Any],
    fn: Callable[[], None],
    *,
    raise_for_kopf: bool = True,
) -> None:
    """Run a reconcile; report failures as conditions and Events, and tell kopf what to do.

    An invalid spec stops (PermanentError: a crash loop helps nobody); anything else is
    retried after a delay. ``raise_for_kopf=False`` (timers, child events) only reports.
    """
    try:
        fn()
    except SpecInvalid as exc:
        op.fail(resource, body, exc)
        if raise_for_kopf:
            raise kopf.PermanentError(str(exc)) from exc
    except Blocked as exc:
        op.fail(resource, body, exc)
        if raise_for_kopf:
            delay = exc.delay if exc.delay is not None else op.settings.operator_retry_delay
            raise kopf.TemporaryError(str(exc), delay=delay) from exc
    except ApiException as exc:
        blocked = Blocked("ApiError", f"HTTP {exc.status}: {exc.reason}")
        op.fail(resource, body, blocked)
        if raise_for_kopf:
            raise kopf.TemporaryError(str(blocked), delay=op.settings.operator_retry_delay) from exc
