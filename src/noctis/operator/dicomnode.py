"""DicomNode: the SCP Deployment, its ConfigMap, Service, HPA and PodDisruptionBudget."""

from __future__ import annotations

from typing import Any

from noctis.operator.archive import resolve_archive
from noctis.operator.builders import dicomnode as build
from noctis.operator.conditions import AVAILABLE, READY, Cond
from noctis.operator.context import Operator
from noctis.operator.ensure import ensure
from noctis.operator.errors import parse_spec
from noctis.operator.kinds import DICOMNODES
from noctis.specs.dicomnode import DicomNodeSpec


def reconcile(op: Operator, body: dict[str, Any], *, apply_always: bool) -> None:
    """Make the children match the spec and report what they say (one function per kind)."""
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    spec = parse_spec(DicomNodeSpec, body.get("spec"))
    archive = resolve_archive(op, namespace, spec.archive)
    desired = build.build_all(name, namespace, spec, archive, op.images)
    initial = {"Deployment": {"spec": {"replicas": spec.min_replicas}}}  # then the HPA's
    results = {
        obj["kind"]: ensure(
            op.kube, body, obj, apply_always=apply_always, initial=initial.get(obj["kind"])
        )
        for obj in desired
    }
    op.report_changes(body, results.values(), apply_always=apply_always)

    deployment = results["Deployment"].obj
    service = results["Service"].obj
    dep_status = deployment.get("status") or {}
    ready = int(dep_status.get("readyReplicas") or 0)
    endpoint = build.external_endpoint(service, spec.service_port)
    fields = {
        "replicas": int(dep_status.get("replicas") or 0),
        "readyReplicas": ready,
        "endpoint": endpoint,
        "service": build.scp_name(name),
    }
    conditions = [
        Cond(
            READY,
            True,
            "Reconciled",
            f"SCP {spec.ae_title} on port {spec.service_port}: Deployment, Service, HPA, "
            "PodDisruptionBudget and ConfigMap in sync",
        ),
        Cond(
            AVAILABLE,
            ready > 0,
            "ReplicasReady" if ready else "NoReadyReplicas",
            f"{ready} SCP pod(s) ready" + (f", reachable at {endpoint}" if endpoint else ""),
        ),
    ]
    op.write_status(DICOMNODES, body, fields, conditions)
