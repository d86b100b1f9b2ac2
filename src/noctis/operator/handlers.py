"""kopf handlers: thin wiring from events to the reconcile function of each kind.

Importing this module registers the handlers (``kopf run -m noctis.operator.handlers``). Nothing
talks to the API or the database at import: the startup handler builds the clients.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import kopf
from pydantic import BaseModel

from noctis.index.db import make_engine, make_sessionmaker
from noctis.operator import archive, cascade, dicomnode, facility, route, scaling, storagepool
from noctis.operator.builders.archive import Images
from noctis.operator.context import Operator, guarded
from noctis.operator.errors import SpecInvalid, parse_spec
from noctis.operator.kinds import (
    API_VERSION,
    ARCHIVES,
    CHILD_RESOURCES,
    CRD_KINDS,
    DICOMNODES,
    FACILITIES,
    GROUP,
    MANAGED_BY,
    OWN_RESOURCES,
    ROUTES,
    STORAGEPOOLS,
    VERSION,
    Resource,
)
from noctis.operator.kube import Kube, load_configuration
from noctis.operator.metrics import OperatorMetrics
from noctis.operator.served import wait_until_served
from noctis.operator.settings import OperatorSettings
from noctis.specs.archive import ArchiveSpec
from noctis.specs.dicomnode import DicomNodeSpec

FINALIZER = f"{GROUP}/finalizer"
CHILD_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
# Timers tick often and do work only when the configured interval has passed, so intervals
# come from the runtime settings rather than from import-time decorator arguments.
TICK = 2.0

log = logging.getLogger("noctis.operator")


class _QuietSuccess(logging.Filter):
    """Drop kopf's per-tick "Timer ... succeeded" and per-child-event success lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            record.levelno == logging.INFO
            and message.endswith("succeeded.")
            and (message.startswith("Timer ") or message.startswith("Handler 'child-"))
        )


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: OperatorSettings = memo.get("settings") or OperatorSettings()
    logging.getLogger("kopf.objects").addFilter(_QuietSuccess())
    settings.persistence.finalizer = FINALIZER
    # Our status is ours: kopf keeps its bookkeeping in annotations, not in status.kopf.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.ERROR
    settings.posting.reporting_component = "noctis-operator"
    # Our CRDs are installed before the operator and the namespaces are named exactly, so no
    # cluster-wide list/watch of namespaces and CRDs is needed (least privilege).
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    selectors: Any = getattr(settings.watching, "label_selectors", None)  # recent kopf only
    for resource in CHILD_RESOURCES.values() if selectors is not None else ():
        # Watch only what we made, not every ConfigMap of the namespace.
        key = (
            (resource.group, resource.version, resource.plural)
            if resource.group
            else (resource.version, resource.plural)
        )
        selectors[key] = CHILD_SELECTOR

    engine = make_engine(config.database_url) if config.database_url else None
    memo.operator = Operator(
        settings=config,
        kube=Kube(load_configuration()),
        images=Images(
            scp=config.image("scp"),
            api=config.image("api"),
            worker=config.image("worker"),
            pull_policy=config.operator_image_pull_policy,
        ),
        engine=engine,
        sessions=make_sessionmaker(engine) if engine is not None else None,
    )
    namespaces = config.namespaces()
    wait_until_served(
        memo.operator.kube,
        [kind.resource for kind in CRD_KINDS],
        [None] if config.operator_clusterwide or not namespaces else namespaces,
    )
    memo.metrics = OperatorMetrics.create()
    if config.operator_metrics_port:
        memo.metrics.serve(config.operator_metrics_host, config.operator_metrics_port)


@kopf.on.cleanup()
def close(memo: kopf.Memo, **_: Any) -> None:
    metrics: OperatorMetrics | None = memo.get("metrics")
    if metrics is not None:
        metrics.stop()
    op: Operator | None = memo.get("operator")
    if op is not None:
        op.kube.close()
        if op.engine is not None:
            op.engine.dispose()


def _ns(body: kopf.Body) -> str:
    return str(body.metadata.namespace)


def _plain(body: kopf.Body) -> dict[str, Any]:
    return {key: copy.deepcopy(value) for key, value in body.items()}


def _run(
    memo: kopf.Memo,
    body: kopf.Body,
    fn: Callable[[Operator, dict[str, Any]], None],
    *,
    raise_for_kopf: bool = True,
) -> None:
    """``fn`` on the object, one at a time per object, its failures turned into conditions
    and events (and, unless a timer runs it, into kopf's retries)."""
    op: Operator = memo.operator
    raw = _plain(body)
    meta = raw["metadata"]
    resource = OWN_RESOURCES[raw["kind"]]
    with op.serialized(raw["kind"], meta["namespace"], meta["name"]):
        guarded(op, resource, raw, lambda: fn(op, raw), raise_for_kopf=raise_for_kopf)


# StoragePool ----------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, STORAGEPOOLS.plural)
@kopf.on.create(GROUP, VERSION, STORAGEPOOLS.plural)
@kopf.on.update(GROUP, VERSION, STORAGEPOOLS.plural)
def storagepool_reconcile(body: kopf.Body, memo: kopf.Memo, reason: str, **_: Any) -> None:
    _run(memo, body, lambda op, raw: storagepool.reconcile(op, raw, measure=True))
    if reason == "update":
        cascade.reconcile_all(memo.operator, _ns(body), storage_pool=body.metadata.name)


@kopf.timer(GROUP, VERSION, STORAGEPOOLS.plural, interval=TICK)
def storagepool_usage(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if _due(memo, "usage_at", memo.operator.settings.operator_usage_interval):
        reconcile = functools.partial(storagepool.reconcile, measure=True)
        _run(memo, body, reconcile, raise_for_kopf=False)


def _deletes_bucket(spec: kopf.Spec, **_: Any) -> bool:
    return spec.get("deletionPolicy") == "Delete"


@kopf.on.delete(GROUP, VERSION, STORAGEPOOLS.plural, when=_deletes_bucket)
def storagepool_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _run(memo, body, storagepool.delete)


# Facility -------------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, FACILITIES.plural)
@kopf.on.create(GROUP, VERSION, FACILITIES.plural)
@kopf.on.update(GROUP, VERSION, FACILITIES.plural)
def facility_reconcile(
    body: kopf.Body, memo: kopf.Memo, reason: str, diff: kopf.Diff, **_: Any
) -> None:
    _run(memo, body, lambda op, raw: facility.reconcile(op, raw, apply_always=True))
    pods_changed = any(
        tuple(change[1][:2]) in (("spec", "storagePool"), ("spec", "notifications"))
        for change in diff or ()
    )
    # A new task queue, another pool, or webhook secrets (notifications) for the pods.
    if reason == "create" or pods_changed:
        cascade.reconcile_all(memo.operator, _ns(body))


@kopf.timer(GROUP, VERSION, FACILITIES.plural, interval=TICK)
def facility_usage(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if _due(memo, "usage_at", memo.operator.settings.operator_facility_interval):
        reconcile = functools.partial(facility.reconcile, apply_always=False)
        _run(memo, body, reconcile, raise_for_kopf=False)


@kopf.on.delete(GROUP, VERSION, FACILITIES.plural)
def facility_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _run(memo, body, facility.disable)
    cascade.reconcile_all(memo.operator, _ns(body))


# Route ----------------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, ROUTES.plural)
@kopf.on.create(GROUP, VERSION, ROUTES.plural)
@kopf.on.update(GROUP, VERSION, ROUTES.plural)
def route_reconcile(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _run(memo, body, lambda op, raw: route.reconcile(op, raw, apply_always=True))


@kopf.timer(GROUP, VERSION, ROUTES.plural, interval=TICK)
def route_progress(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if _due(memo, "progress_at", memo.operator.settings.operator_route_interval):
        reconcile = functools.partial(route.reconcile, apply_always=False)
        _run(memo, body, reconcile, raise_for_kopf=False)


@kopf.on.delete(GROUP, VERSION, ROUTES.plural)
def route_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _run(memo, body, route.remove)


# Archive and DicomNode ------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, ARCHIVES.plural)
@kopf.on.create(GROUP, VERSION, ARCHIVES.plural)
@kopf.on.update(GROUP, VERSION, ARCHIVES.plural)
def archive_reconcile(body: kopf.Body, memo: kopf.Memo, reason: str, **_: Any) -> None:
    _run(memo, body, lambda op, raw: archive.reconcile(op, raw, apply_always=True))
    if reason != "resume":  # DicomNodes resume on their own
        cascade.reconcile_dependents(memo.operator, _ns(body), body.metadata.name)


@kopf.timer(GROUP, VERSION, ARCHIVES.plural, interval=TICK)
def archive_scale(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Worker replicas from queue depth (only where an autoscale block is declared)."""
    if _due(memo, "scale_at", memo.operator.settings.operator_scale_interval):
        scale = functools.partial(scaling.scale, metrics=memo.get("metrics"))
        _run(memo, body, scale, raise_for_kopf=False)


@kopf.on.resume(GROUP, VERSION, DICOMNODES.plural)
@kopf.on.create(GROUP, VERSION, DICOMNODES.plural)
@kopf.on.update(GROUP, VERSION, DICOMNODES.plural)
def dicomnode_reconcile(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _run(memo, body, lambda op, raw: dicomnode.reconcile(op, raw, apply_always=True))


@kopf.on.delete(GROUP, VERSION, ARCHIVES.plural, optional=True)
@kopf.on.delete(GROUP, VERSION, DICOMNODES.plural, optional=True)
def forget(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Children go by garbage collection (owner references); only our lock entry is left."""
    memo.operator.forget(body["kind"], _ns(body), body.metadata.name)


# Children: a deleted or edited child brings its owner's reconcile back at once ----------------

_OWNER_RECONCILE: dict[str, tuple[Resource, type[BaseModel], Callable[..., None]]] = {
    "DicomNode": (DICOMNODES, DicomNodeSpec, dicomnode.reconcile),
    "Archive": (ARCHIVES, ArchiveSpec, archive.reconcile),
}


def child_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    refs = body.metadata.get("ownerReferences") or []
    owner = next(
        (r for r in refs if r.get("controller") and r.get("apiVersion") == API_VERSION), None
    )
    if owner is None or owner.get("kind") not in _OWNER_RECONCILE:
        return
    op: Operator = memo.operator
    resource, model, reconcile = _OWNER_RECONCILE[owner["kind"]]
    namespace = _ns(body)
    with op.serialized(owner["kind"], namespace, owner["name"]):
        current = op.kube.get(resource, namespace, owner["name"])
        if current is None or current["metadata"].get("deletionTimestamp"):
            return
        if current["metadata"]["uid"] != owner.get("uid"):
            return
        try:
            parse_spec(model, current.get("spec"))
        except SpecInvalid:
            return  # reported by the owner's own handler; nothing to restore from
        guarded(
            op,
            resource,
            current,
            lambda: reconcile(op, current, apply_always=False),
            raise_for_kopf=False,
        )


for _child in CHILD_RESOURCES.values():
    _selector = (
        (_child.group, _child.version, _child.plural)
        if _child.group
        else (_child.version, _child.plural)
    )
    kopf.on.event(
        *_selector, id=f"child-{_child.plural}", labels={"app.kubernetes.io/managed-by": MANAGED_BY}
    )(child_event)


def _due(memo: kopf.Memo, key: str, interval: float) -> bool:
    now = time.monotonic()
    last = memo.get(key)
    if last is not None and now - last < interval:
        return False
    memo[key] = now
    return True
