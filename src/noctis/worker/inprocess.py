"""Embedded mode: the worker's task functions run on the archive's in-process queue."""

from __future__ import annotations

import functools

from noctis.archive import Archive
from noctis.queue import InProcessQueue
from noctis.worker.tasks import TASKS


def register_tasks(archive: Archive) -> None:
    """Bind every task function to ``archive`` and register it with its in-process queue."""
    if not isinstance(archive.queue, InProcessQueue):
        raise TypeError("register_tasks needs an archive opened with an InProcessQueue")
    for name, function in TASKS.items():
        archive.queue.register(name, functools.partial(function, archive))
