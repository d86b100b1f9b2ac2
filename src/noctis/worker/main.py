"""`noctis worker`: a Celery worker running the task functions against the archive."""

from __future__ import annotations

from noctis.archive import Archive
from noctis.queue import DEFAULT_QUEUE
from noctis.settings import Settings
from noctis.worker.celery_app import create_celery


def run(settings: Settings) -> None:
    archive = Archive.open(settings)
    app = create_celery(settings, archive)
    try:
        app.worker_main(["worker", "--queues", DEFAULT_QUEUE, "--loglevel", "INFO"])
    finally:
        archive.close()
