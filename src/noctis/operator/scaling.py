"""Worker replicas from queue depth: the operator itself, on a timer, within the Archive's
declared bounds (``worker.autoscale``, ``transfers.autoscale``).

Why not a HorizontalPodAutoscaler: an HPA on queue depth needs an external-metrics adapter
(prometheus-adapter, KEDA) that many clusters lack and that Noctis would then have to install
and secure; the operator already holds the broker's address and the bounds, so it sets the
replicas itself through the Deployment's scale subresource.

The rule (``decide``): wanted = ceil((queued + unacked) / tasksPerReplica), clamped to
[minReplicas, maxReplicas]. Up at once; down only after the queues have wanted fewer replicas
than run for a whole ``coolDownSeconds`` (the time is kept in the Archive's status, so a
restarted operator keeps counting), so a queue that drains and fills again does not flap.
The broker is read only when an autoscale block is declared.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from noctis.operator.builders import archive as build
from noctis.operator.context import Operator
from noctis.operator.errors import parse_spec
from noctis.operator.kinds import ARCHIVES, DEPLOYMENTS, FACILITIES, SECRETS
from noctis.operator.kube import ApiException
from noctis.operator.metrics import OperatorMetrics
from noctis.operator.queue_depth import QueueDepths, read_depths
from noctis.specs.archive import ArchiveSpec, AutoscaleSpec, destination_queue
from noctis.specs.facility import FacilitySpec

log = logging.getLogger("noctis.operator")

SCALER_MANAGER = "noctis-operator-scaler"


@dataclass(frozen=True)
class Decision:
    wanted: int  # what the depth asks for, within bounds
    replicas: int  # what to set now
    last_busy: float  # when the queues last wanted at least as many replicas as ran


def decide(
    bounds: AutoscaleSpec, depth: int, current: int, last_busy: float | None, now: float
) -> Decision:
    """The replicas to run for ``depth`` tasks when ``current`` run (pure)."""
    wanted = math.ceil(depth / bounds.tasks_per_replica)
    wanted = max(bounds.min_replicas, min(bounds.max_replicas, wanted))
    if wanted >= current:
        return Decision(wanted, wanted, now)
    if last_busy is None or now - last_busy >= bounds.cool_down_seconds:
        return Decision(wanted, wanted, now)  # the next step down waits a cool-down again
    return Decision(wanted, min(current, bounds.max_replicas), last_busy)


def destination_queues(facilities: list[dict[str, Any]]) -> list[str]:
    """The queue of every AE with a host and port in these Facilities."""
    titles: set[str] = set()
    for facility in facilities:
        try:
            spec = FacilitySpec.model_validate(facility.get("spec") or {})
        except ValueError:
            continue  # reported by the Facility's own reconcile
        titles |= {ae.ae_title for ae in spec.application_entities if ae.host and ae.port}
    return [destination_queue(t) for t in sorted(titles)]


def scale(op: Operator, body: dict[str, Any], metrics: OperatorMetrics | None = None) -> None:
    """Read the queue depths of an Archive with autoscale declared and set its replicas."""
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    spec = parse_spec(ArchiveSpec, body.get("spec"))
    targets = [
        ("workerScaling", build.worker_name(name), spec.worker.autoscale),
        ("transferScaling", build.transfer_name(name), spec.transfers.autoscale),
    ]
    targets = [(field, deployment, bounds) for field, deployment, bounds in targets if bounds]
    if not targets:
        return
    facilities = [
        f for f in op.kube.list(FACILITIES, namespace) if not f["metadata"].get("deletionTimestamp")
    ]
    pipeline = build.task_queues([f["metadata"]["name"] for f in facilities])
    destinations = destination_queues(facilities)
    queues = {"workerScaling": pipeline, "transferScaling": destinations}
    status = body.get("status") or {}
    depths, problem = _depths(op, namespace, spec, [*pipeline, *destinations])
    if depths is not None and metrics is not None:
        metrics.report_queues(
            namespace,
            name,
            {q: (depths.queued.get(q, 0), depths.unacked.get(q, 0)) for q in depths.queued},
        )
    fields: dict[str, Any] = {"destinationQueues": destinations}
    for field, deployment, bounds in targets:
        fields[field] = _scale_one(
            op, namespace, deployment, bounds, depths, problem, queues[field], status.get(field)
        )
        if metrics is not None:
            labels = (namespace, name, deployment)
            metrics.wanted_replicas.labels(*labels).set(fields[field]["wantedReplicas"])
            metrics.replicas.labels(*labels).set(fields[field]["replicas"])
    op.write_status(ARCHIVES, body, fields, [])


def _scale_one(
    op: Operator,
    namespace: str,
    deployment: str,
    bounds: AutoscaleSpec,
    depths: QueueDepths | None,
    problem: str,
    queues: list[str],
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    previous = previous or {}
    current_obj = op.kube.get(DEPLOYMENTS, namespace, deployment)
    current = int(((current_obj or {}).get("spec") or {}).get("replicas") or 0)
    report = {
        "deployment": deployment,
        "queued": int(previous.get("queued") or 0),
        "unacked": int(previous.get("unacked") or 0),
        "wantedReplicas": int(previous.get("wantedReplicas") or current),
        "replicas": current,
        "lastBusy": previous.get("lastBusy") or "",
        "measured": previous.get("measured") or "",
        "message": problem,
    }
    if current_obj is None:
        report["message"] = f"Deployment {deployment} not created yet"
        return report
    if depths is None:
        return report  # replicas left as they are while the broker cannot be read
    queued, unacked = depths.total(queues)
    now = time.time()
    decision = decide(bounds, queued + unacked, current, _parse_time(report["lastBusy"]), now)
    if decision.replicas != current:
        _set_replicas(op, namespace, deployment, decision.replicas)
        log.info(
            "%s/%s: %d task(s) queued, %d unacknowledged: replicas %d -> %d",
            namespace, deployment, queued, unacked, current, decision.replicas,
        )  # fmt: skip
    report.update(
        queued=queued,
        unacked=unacked,
        wantedReplicas=decision.wanted,
        replicas=decision.replicas,
        lastBusy=_format_time(decision.last_busy),
        measured=_format_time(now),
        message=_message(bounds, decision, current),
    )
    return report


def _message(bounds: AutoscaleSpec, decision: Decision, current: int) -> str:
    if decision.replicas < decision.wanted or decision.replicas == current == decision.wanted:
        return f"{decision.replicas} replica(s) within {bounds.min_replicas}..{bounds.max_replicas}"
    if decision.replicas > decision.wanted:
        return (
            f"{decision.wanted} replica(s) wanted; {decision.replicas} kept until the queues "
            f"have wanted fewer for {bounds.cool_down_seconds}s"
        )
    return f"scaled from {current} to {decision.replicas} replica(s)"


def _depths(
    op: Operator, namespace: str, spec: ArchiveSpec, queues: list[str]
) -> tuple[QueueDepths | None, str]:
    if spec.broker is None:
        return None, "no broker declared (spec.broker): queue depth unknown, replicas unchanged"
    secret = op.kube.get(SECRETS, namespace, spec.broker.name)
    value = ((secret or {}).get("data") or {}).get(spec.broker.key)
    if value is None:
        return None, f"Secret {spec.broker.name} has no key {spec.broker.key!r}: replicas unchanged"
    try:
        url = base64.b64decode(value).decode().strip()
    except (binascii.Error, UnicodeDecodeError):
        return None, f"Secret {spec.broker.name} key {spec.broker.key!r} is not a URL"
    try:
        return read_depths(url, queues), ""
    except (redis.RedisError, OSError, ValueError) as exc:
        # Never the URL in the message: it may carry the broker's password.
        return None, f"cannot read the broker's queues ({type(exc).__name__}): replicas unchanged"


def _set_replicas(op: Operator, namespace: str, deployment: str, replicas: int) -> None:
    path = DEPLOYMENTS.path(namespace, deployment, "scale")
    try:
        op.kube.request(
            "PATCH",
            path,
            query={"fieldManager": SCALER_MANAGER},
            body={"spec": {"replicas": replicas}},
            content_type="application/merge-patch+json",
        )
    except ApiException as exc:
        log.warning("cannot scale %s/%s: HTTP %s %s", namespace, deployment, exc.status, exc.reason)
        raise


def _format_time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> float | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
