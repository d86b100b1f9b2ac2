"""The idempotent ensure step for one child object.

get; create if missing; refuse an object we do not own; wait while it is being deleted; patch
drift. Creates and patches are server-side applies with our field manager, so a field we stop
declaring is removed, and fields other controllers own (the HPA's replica count) are left alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import kopf

from noctis.operator.errors import Blocked
from noctis.operator.kinds import FIELD_MANAGER, resource_of
from noctis.operator.kube import ApiException, Kube

INITIAL_MANAGER = f"{FIELD_MANAGER}-initial"


@dataclass(frozen=True)
class Ensured:
    action: str  # "created", "patched" or "unchanged"
    obj: dict[str, Any]
    drift: tuple[str, ...] = ()


def owned_by(obj: dict[str, Any], owner_uid: str) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == owner_uid and ref.get("controller") for ref in refs)


def drift(desired: Any, actual: Any, path: str = "") -> list[str]:
    """Paths where ``actual`` does not carry what ``desired`` declares.

    Fields the API server adds (defaults, clusterIP, status) are not drift; a scalar written
    as 2 and read back as "2" is the same value.
    """
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return [path or "."]
        found: list[str] = []
        for key, value in desired.items():
            found += drift(value, actual.get(key), f"{path}.{key}")
        return found
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return [path]
        found = []
        for i, (want, have) in enumerate(zip(desired, actual, strict=True)):
            found += drift(want, have, f"{path}[{i}]")
        return found
    if desired == actual or (actual is not None and str(desired) == str(actual)):
        return []
    return [path]


def ensure(
    kube: Kube,
    owner: dict[str, Any],
    desired: dict[str, Any],
    *,
    apply_always: bool = False,
    initial: dict[str, Any] | None = None,
) -> Ensured:
    """Make one child match ``desired``; ``apply_always`` after a spec change (removals).

    ``initial`` fields are set once, at creation, under a field manager of their own, so that
    another controller can take them over: the HPA owns a Deployment's replica count after we
    start it at minReplicas.
    """
    resource = resource_of(desired)
    kopf.adopt(desired, owner=kopf.Body(cast(kopf.RawBody, owner)))  # refs, namespace, labels
    meta = desired["metadata"]
    owner_uid = owner["metadata"]["uid"]
    kind_name = f"{desired['kind']} {meta['name']}"
    try:
        existing = kube.get(resource, meta["namespace"], meta["name"])
        if existing is None:
            created = kube.apply(resource, desired, force=False)
            if initial:
                head = {key: desired[key] for key in ("apiVersion", "kind")}
                head["metadata"] = {"name": meta["name"], "namespace": meta["namespace"]}
                created = kube.apply(
                    resource, {**head, **initial}, force=False, manager=INITIAL_MANAGER
                )
            return Ensured("created", created)
        if not owned_by(existing, owner_uid):
            raise Blocked(
                "ChildConflict",
                f"{kind_name} already exists and is not owned by {owner['kind']} "
                f"{owner['metadata']['name']}: rename or delete it",
            )
        if existing["metadata"].get("deletionTimestamp"):
            raise Blocked("ChildDeleting", f"{kind_name} is being deleted; waiting", delay=5)
        changed = tuple(drift(desired, existing))
        if not changed and not apply_always:
            return Ensured("unchanged", existing)
        applied = kube.apply(resource, desired, force=True)
        if applied.get("metadata", {}).get("resourceVersion") == existing["metadata"].get(
            "resourceVersion"
        ):
            return Ensured("unchanged", applied)
        return Ensured("patched", applied, changed)
    except ApiException as exc:
        raise api_blocked(exc, f"{kind_name}") from exc


def api_blocked(exc: ApiException, what: str) -> Blocked:
    """An API error as a condition reason and message."""
    if exc.status == 403:
        return Blocked("Forbidden", f"not allowed to write {what}: {_message(exc)}")
    if exc.status == 409:
        return Blocked("Conflict", f"conflict writing {what}: {_message(exc)}", delay=2)
    if exc.status == 422:
        return Blocked("Rejected", f"the API server rejected {what}: {_message(exc)}")
    return Blocked("ApiError", f"{what}: HTTP {exc.status} {_message(exc)}")


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)
