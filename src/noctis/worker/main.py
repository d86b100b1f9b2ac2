"""`noctis worker`: a Celery worker running the task functions against the archive.

Queues: ``NOCTIS_WORKER_QUEUES`` (comma-separated) when set -- the operator sets it per
Archive -- else the default queue plus every enabled facility's and every destination's queue
(``NOCTIS_WORKER_ROLE`` narrows it), read from the index at start and followed afterwards
(``noctis.worker.queues``).

Pool: threads. The tasks mostly wait on the object store and the index, and threads share one
archive (engine and store clients are thread-safe) where a prefork pool would hold one per
child and need them reopened after the fork.

Probes (``noctis.worker.liveness``, ``noctis.core.probes``): the consumer touches
``$NOCTIS_DATA_DIR/worker.heartbeat`` every 10 s from its event loop. A Deployment probes it
with either

    livenessProbe:
      exec: {command: ["python", "-m", "noctis.worker.liveness"]}   # exit 0 = alive
      periodSeconds: 30

or ``httpGet /healthz`` (and ``/readyz``) on ``NOCTIS_HEALTH_PORT`` (default 8081), which
this process serves.
"""

from __future__ import annotations

import logging

from noctis.core.probes import HealthServer
from noctis.core.runtime import Runtime
from noctis.settings import Settings
from noctis.worker.celery_app import create_celery
from noctis.worker.liveness import Heartbeat, heartbeat_path
from noctis.worker.queues import configured_queues, followed_queues
from noctis.worker.tasks import PERIODIC_JOBS

log = logging.getLogger(__name__)

CONCURRENCY = 2  # task threads per worker process; scale with replicas
# Celery logs two INFO lines per task, and every stored instance makes two tasks: quiet at
# INFO. Failures are still logged (ERROR), and the tasks log what they built.
_PER_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy")


def _metrics() -> tuple[bytes, str]:
    """The process's Prometheus metrics (the periodic jobs' counters, e.g. studies stable)."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def run(settings: Settings, *, concurrency: int = CONCURRENCY) -> None:
    for name in _PER_TASK_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    runtime = Runtime.open(settings)
    try:
        configured = configured_queues(settings)
        queues = configured or followed_queues(runtime, settings.worker_role)
        heartbeat = Heartbeat(heartbeat_path(settings))
        heartbeat.clear()
        app = create_celery(
            settings,
            runtime,
            heartbeat=heartbeat,
            follow_facilities=not configured,
            role=settings.worker_role,
            periodic_jobs=PERIODIC_JOBS,
        )
        health = HealthServer(
            settings.health_host,
            settings.health_port,
            alive=heartbeat.fresh,
            ready=lambda: {
                "consumer": "ok" if heartbeat.fresh() else "no fresh heartbeat",
                **runtime.readiness(),
            },
            metrics=_metrics,
            name="noctis-worker-health",
        ).start()
        log.info("worker consuming %s; probes on port %d", ", ".join(queues), health.port)
        try:
            app.worker_main(
                [
                    "worker",
                    "--queues", ",".join(queues),
                    "--pool", "threads",
                    "--concurrency", str(concurrency),
                    "--loglevel", "INFO",
                    "--without-gossip",  # no worker-to-worker chatter on the broker
                    "--without-mingle",
                ]
            )  # fmt: skip
        finally:
            health.stop()
    finally:
        runtime.close()
