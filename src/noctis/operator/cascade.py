"""Changes that ripple: a StoragePool or Facility change reaches Archives, an Archive its nodes.

A DicomNode's pods take their index and storage settings from its Archive, and an Archive's
from its StoragePool and the Facilities of its namespace (one task queue each). Reconciles run
in order StoragePool -> Archive -> DicomNode, never back, so the per-object locks cannot
deadlock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from noctis.operator import archive, dicomnode
from noctis.operator.context import Operator, guarded
from noctis.operator.kinds import ARCHIVES, DICOMNODES
from noctis.specs.dicomnode import DEFAULT_ARCHIVE


def reconcile_dependents(op: Operator, namespace: str, archive_name: str) -> None:
    """The DicomNodes of an Archive take its settings: bring them along after it changed."""
    for node in op.kube.list(DICOMNODES, namespace):
        if (node.get("spec") or {}).get("archive", DEFAULT_ARCHIVE) != archive_name:
            continue
        if node["metadata"].get("deletionTimestamp"):
            continue
        with op.serialized("DicomNode", namespace, node["metadata"]["name"]):
            guarded(
                op, DICOMNODES, node, _later(dicomnode.reconcile, op, node), raise_for_kopf=False
            )


def reconcile_all(op: Operator, namespace: str, *, storage_pool: str | None = None) -> None:
    """Every Archive of a namespace (or those on one StoragePool), and their DicomNodes.

    A StoragePool a Facility names is every Archive's of the namespace (their pods get it)."""
    if storage_pool is not None and storage_pool in archive.facility_pools(op, namespace, ""):
        storage_pool = None
    for body in op.kube.list(ARCHIVES, namespace):
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            continue
        if storage_pool is not None and (body.get("spec") or {}).get("storagePool") != storage_pool:
            continue
        with op.serialized("Archive", namespace, meta["name"]):
            guarded(op, ARCHIVES, body, _later(archive.reconcile, op, body), raise_for_kopf=False)
        reconcile_dependents(op, namespace, meta["name"])


def _later(
    reconcile: Callable[..., None], op: Operator, body: dict[str, Any]
) -> Callable[[], None]:
    """A drift-only reconcile of ``body``, to run under ``guarded``."""
    return lambda: reconcile(op, body, apply_always=False)
