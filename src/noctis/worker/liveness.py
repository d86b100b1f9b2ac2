"""Worker liveness: a heartbeat file the running consumer touches, and the check a probe runs.

A Celery consumer step touches ``<data_dir>/worker.heartbeat`` every HEARTBEAT_SECONDS from
the consumer's own event loop, so the file goes stale when that loop stops: a hung broker
connection, a deadlocked consumer, a worker that never finished starting. Busy task threads
do not stop it (tasks run on the pool, not on the loop), so a long task is not a dead worker.

For a Kubernetes probe, either of:

- HTTP ``GET /healthz`` on the worker's health port (``noctis.core.probes``; what the
  operator's worker Deployment probes), or
- exec ``python -m noctis.worker.liveness``: exit 0 while the heartbeat is under MAX_AGE
  seconds old, 1 otherwise (reads the same NOCTIS_* environment as the worker).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from celery import bootsteps

from noctis.settings import Settings

HEARTBEAT_SECONDS = 10.0
MAX_AGE = 60.0  # six missed beats: a probe's own hiccup never restarts a healthy worker


def heartbeat_path(settings: Settings) -> Path:
    return settings.data_dir / "worker.heartbeat"


class Heartbeat:
    def __init__(self, path: Path) -> None:
        self.path = path

    def beat(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()

    def clear(self) -> None:
        """Forget an earlier run's heartbeat (a restarted container keeps its data volume)."""
        self.path.unlink(missing_ok=True)

    def age(self) -> float | None:
        """Seconds since the last beat; None before the first."""
        try:
            return max(0.0, time.time() - self.path.stat().st_mtime)
        except FileNotFoundError:
            return None

    def fresh(self, max_age: float = MAX_AGE) -> bool:
        age = self.age()
        return age is not None and age <= max_age


def heartbeat_step(heartbeat: Heartbeat, interval: float | None = None) -> type[Any]:
    """A Celery consumer bootstep beating ``heartbeat`` from the consumer's event loop."""

    class HeartbeatStep(bootsteps.StartStopStep):
        requires = {"celery.worker.consumer.tasks:Tasks"}

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.tref: Any = None

        def start(self, parent: Any) -> None:
            heartbeat.beat()
            every = interval or HEARTBEAT_SECONDS
            self.tref = parent.timer.call_repeatedly(every, heartbeat.beat)

        def stop(self, parent: Any) -> None:
            if self.tref is not None:
                self.tref.cancel()
                self.tref = None

        shutdown = stop

    return HeartbeatStep


def check(settings: Settings, max_age: float = MAX_AGE) -> tuple[bool, str]:
    """(alive?, why) for the worker these settings describe."""
    heartbeat = Heartbeat(heartbeat_path(settings))
    age = heartbeat.age()
    if age is None:
        return False, f"no heartbeat at {heartbeat.path}: the worker has not started consuming"
    if age > max_age:
        return False, f"heartbeat {age:.0f} s old (limit {max_age:.0f} s): the consumer is stuck"
    return True, f"heartbeat {age:.1f} s old"


def main() -> int:
    alive, why = check(Settings())
    print(why, file=sys.stdout if alive else sys.stderr)
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
