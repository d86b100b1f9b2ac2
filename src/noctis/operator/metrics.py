"""The operator's Prometheus metrics (/metrics on NOCTIS_OPERATOR_METRICS_PORT).

Queue depth per Archive queue and the replicas the scaler wants, so a dashboard shows why the
workers scaled. The registry is the operator's own (built in its startup, never at import).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server


@dataclass
class OperatorMetrics:
    registry: CollectorRegistry
    queued: Gauge
    unacked: Gauge
    wanted_replicas: Gauge
    replicas: Gauge
    _server: Any = None
    _queues: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    @classmethod
    def create(cls) -> OperatorMetrics:
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            queued=Gauge(
                "noctis_queue_depth",
                "tasks waiting on a queue of an Archive's broker (all priorities)",
                ["namespace", "archive", "queue"],
                registry=registry,
            ),
            unacked=Gauge(
                "noctis_queue_unacked",
                "tasks of a queue delivered to a worker and not yet acknowledged",
                ["namespace", "archive", "queue"],
                registry=registry,
            ),
            wanted_replicas=Gauge(
                "noctis_workers_wanted_replicas",
                "replicas the queue depth wants for a worker Deployment (within its bounds)",
                ["namespace", "archive", "deployment"],
                registry=registry,
            ),
            replicas=Gauge(
                "noctis_workers_replicas",
                "replicas the operator last set on a worker Deployment",
                ["namespace", "archive", "deployment"],
                registry=registry,
            ),
        )

    def report_queues(
        self, namespace: str, archive: str, depths: dict[str, tuple[int, int]]
    ) -> None:
        """Set (queued, unacked) per queue of one Archive; a queue no longer listed (its
        facility or destination removed) stops being reported."""
        for queue, (queued, unacked) in depths.items():
            self.queued.labels(namespace, archive, queue).set(queued)
            self.unacked.labels(namespace, archive, queue).set(unacked)
        for gone in self._queues.get((namespace, archive), set()) - set(depths):
            self.queued.remove(namespace, archive, gone)
            self.unacked.remove(namespace, archive, gone)
        self._queues[(namespace, archive)] = set(depths)

    def serve(self, host: str, port: int) -> None:
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
