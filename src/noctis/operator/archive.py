"""Archive: the API and worker Deployments, and the settings every Noctis pod shares."""

from __future__ import annotations

from typing import Any

from noctis.operator.builders import archive as build
from noctis.operator.builders.archive import ArchiveContext
from noctis.operator.conditions import AVAILABLE, READY, Cond
from noctis.operator.context import Operator
from noctis.operator.ensure import ensure
from noctis.operator.errors import Blocked, SpecInvalid, parse_spec
from noctis.operator.kinds import ARCHIVES, FACILITIES, STORAGEPOOLS
from noctis.specs.archive import ArchiveSpec
from noctis.specs.facility import FacilitySpec
from noctis.specs.kube import SecretKeyRef
from noctis.specs.storagepool import StoragePoolSpec


def resolve_archive(op: Operator, namespace: str, name: str) -> ArchiveContext:
    """The shared settings of Archive ``name``: what a DicomNode needs from it."""
    archive = op.kube.get(ARCHIVES, namespace, name)
    if archive is None:
        raise Blocked("ArchiveNotFound", f"Archive {name} not found in namespace {namespace}")
    try:
        spec = parse_spec(ArchiveSpec, archive.get("spec"))
    except SpecInvalid as exc:
        raise Blocked("ArchiveInvalid", f"Archive {name} is invalid: {exc}") from exc
    return _context(op, namespace, name, spec)


def _context(op: Operator, namespace: str, name: str, spec: ArchiveSpec) -> ArchiveContext:
    pool = op.kube.get(STORAGEPOOLS, namespace, spec.storage_pool)
    if pool is None:
        raise Blocked(
            "StoragePoolNotFound",
            f"StoragePool {spec.storage_pool} (of Archive {name}) not found in {namespace}",
        )
    try:
        pool_spec = parse_spec(StoragePoolSpec, pool.get("spec"))
    except SpecInvalid as exc:
        raise Blocked("StoragePoolInvalid", f"StoragePool {spec.storage_pool}: {exc}") from exc
    return build.archive_context(
        name,
        namespace,
        spec,
        pool_spec,
        facility_pools(op, namespace, spec.storage_pool),
        facility_webhook_secrets(op, namespace),
    )


def facility_webhook_secrets(op: Operator, namespace: str) -> dict[tuple[str, str], SecretKeyRef]:
    """The secretRef of every webhook the valid Facilities of the namespace declare, by
    (facility, webhook): the workers that sign the calls get each from its Secret."""
    refs: dict[tuple[str, str], SecretKeyRef] = {}
    for body in op.kube.list(FACILITIES, namespace):
        if body["metadata"].get("deletionTimestamp"):
            continue
        try:
            spec = parse_spec(FacilitySpec, body.get("spec"))
        except SpecInvalid:
            continue  # reported on the Facility itself
        for webhook in spec.notifications.webhooks if spec.notifications else ():
            if webhook.secret_ref is not None:
                refs[(body["metadata"]["name"], webhook.name)] = webhook.secret_ref
    return refs


def facility_pools(op: Operator, namespace: str, own_pool: str) -> dict[str, StoragePoolSpec]:
    """The StoragePools the Facilities of the namespace name besides the Archive's own, that
    exist and are valid (a Facility naming a missing one reports it in its own status, and
    its stores are refused until the pool exists: they never fall back to another pool)."""
    named = {
        str((f.get("spec") or {}).get("storagePool"))
        for f in op.kube.list(FACILITIES, namespace)
        if (f.get("spec") or {}).get("storagePool") and not f["metadata"].get("deletionTimestamp")
    }
    pools = {}
    for pool_name in sorted(named - {own_pool}):
        body = op.kube.get(STORAGEPOOLS, namespace, pool_name)
        if body is None:
            continue
        try:
            pools[pool_name] = parse_spec(StoragePoolSpec, body.get("spec"))
        except SpecInvalid:
            continue  # reported on the StoragePool itself
    return pools


def reconcile(op: Operator, body: dict[str, Any], *, apply_always: bool) -> None:
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    spec = parse_spec(ArchiveSpec, body.get("spec"))
    ctx = _context(op, namespace, name, spec)
    facilities = [
        f["metadata"]["name"]
        for f in op.kube.list(FACILITIES, namespace)
        if not f["metadata"].get("deletionTimestamp")
    ]
    desired = build.build_all(ctx, spec, op.images, facilities)
    # Autoscaled Deployments start at their minimum; then the scaler owns their replicas.
    initial = build.initial_replicas(name, spec)
    results = {
        f"{obj['kind']}/{obj['metadata']['name']}": ensure(
            op.kube,
            body,
            obj,
            apply_always=apply_always,
            initial=(
                {"spec": {"replicas": initial[obj["metadata"]["name"]]}}
                if obj["kind"] == "Deployment" and obj["metadata"]["name"] in initial
                else None
            ),
        )
        for obj in desired
    }
    op.report_changes(body, results.values(), apply_always=apply_always)

    api = results[f"Deployment/{build.api_name(name)}"].obj.get("status") or {}
    worker = results[f"Deployment/{build.worker_name(name)}"].obj.get("status") or {}
    transfer = results[f"Deployment/{build.transfer_name(name)}"].obj.get("status") or {}
    ready = int(api.get("readyReplicas") or 0)
    fields = {
        "replicas": int(api.get("replicas") or 0),
        "readyReplicas": ready,
        "workerReadyReplicas": int(worker.get("readyReplicas") or 0),
        "transferReadyReplicas": int(transfer.get("readyReplicas") or 0),
        "apiEndpoint": f"http://{build.api_name(name)}.{namespace}.svc:{spec.api.service.port}",
        "taskQueues": build.task_queues(facilities),
    }
    conditions = [
        Cond(
            READY,
            True,
            "Reconciled",
            "API, worker and transfer Deployments, Service, PodDisruptionBudget and ConfigMap "
            "in sync",
        ),
        Cond(
            AVAILABLE,
            ready > 0,
            "ReplicasReady" if ready else "NoReadyReplicas",
            f"{ready} API pod(s) ready",
        ),
    ]
    op.write_status(ARCHIVES, body, fields, conditions)
