"""What every target under test offers the benchmarks, and the calling AE title they use."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.procs import Service

CALLING_AE = "BENCHSCU"


class Target:
    """A DICOM receiver under test. Subclasses fill in start/stop/counting."""

    name = ""
    label = ""
    ae_title = "ANY"
    queryable = False  # answers C-FIND and DICOMweb
    scp_processes: int | None = None  # Noctis: the SCP processes sharing its port now

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dicom_port = 0
        self.details: dict[str, Any] = {}  # versions and settings, for the results JSON
        self._cleanups: list[Callable[[], None]] = []

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop everything this target started, last started first; never raises."""
        while self._cleanups:
            cleanup = self._cleanups.pop()
            with contextlib.suppress(Exception):
                cleanup()

    def on_stop(self, cleanup: Callable[[], None]) -> None:
        self._cleanups.append(cleanup)

    def server_pids(self) -> list[int]:
        """The receiving server's processes (their trees are what peak RSS measures)."""
        raise NotImplementedError

    def web_pids(self) -> list[int]:
        """Processes answering the web apart from `server_pids` (Noctis's `noctis api`)."""
        return []

    def backing_pids(self) -> dict[str, list[int]]:
        """The root pids of the services behind the server, by component ("database",
        "object_store"); their whole trees are what the CPU figures measure. None by default."""
        return {}

    def count_instances(self) -> int:
        """How many instances the target holds now, by its own account."""
        raise NotImplementedError

    # DICOMweb, for queryable targets
    def dicomweb_root(self) -> str:
        raise NotImplementedError

    def http_headers(self) -> dict[str, str]:
        return {}

    def set_scp_processes(self, count: int) -> bool:
        """Restart the SCP with `count` processes on one port; False if unsupported."""
        return False

    def restore(self) -> None:
        """Back to the default configuration after the store cases (before the web suite)."""

    def _service(self, name: str, argv: list[str], **kwargs: Any) -> Service:
        service = Service(name, argv, log_path=self.root / f"{name}.log", **kwargs)
        service.start()
        self.on_stop(service.stop)
        return service


def wait_for_count(target: Target, expected: int, timeout: float = 15.0) -> int:
    """The target's instance count, polled until it reaches `expected` or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        count = target.count_instances()
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.2)
