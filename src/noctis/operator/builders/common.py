"""Pieces every workload shares: labels, security contexts, probes, secret env."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from noctis.operator.kinds import MANAGED_BY

RUN_AS = 10001
DATA_DIR = "/var/lib/noctis"
CONFIG_HASH = "pacs.noctis.io/config-hash"


def labels(component: str, instance: str, owner_kind: str) -> dict[str, str]:
    """The app.kubernetes.io/* labels, plus which custom resource the object belongs to."""
    return {
        **selector_labels(component, instance),
        "app.kubernetes.io/part-of": "noctis",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        f"pacs.noctis.io/{owner_kind.lower()}": instance,
    }


def selector_labels(component: str, instance: str) -> dict[str, str]:
    # Never changes for a given object: Deployment selectors are immutable.
    return {
        "app.kubernetes.io/name": "noctis",
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
    }


def metadata(
    name: str, namespace: str, obj_labels: dict[str, str], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(obj_labels)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def http_probe(path: str, port: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def secret_env(name: str, secret: str, key: str, *, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def scratch_volumes() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Writable places for a read-only root filesystem: data (spool) and /tmp."""
    volumes = [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
    mounts = [{"name": "data", "mountPath": DATA_DIR}, {"name": "tmp", "mountPath": "/tmp"}]
    return volumes, mounts


def spread(selector: dict[str, str]) -> list[dict[str, Any]]:
    """Prefer one pod per node, so a node failure takes one replica."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(selector)},
        }
    ]


def config_hash(*parts: Any) -> str:
    """Stable digest of configuration, put on pod templates so a change rolls the pods."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pdb(
    name: str, namespace: str, obj_labels: dict[str, str], selector: dict[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(name, namespace, obj_labels),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(selector)}},
    }
