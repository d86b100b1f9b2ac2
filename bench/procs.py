"""Child processes of the benchmark: started in a session of their own, logged, always stopped;
and what they cost (memory of a process tree, CPU time of trees and of the machine).

Every server runs in its own process group, so stopping it also stops whatever it forked
(Noctis's extra SCP processes, Orthanc's helpers) and a Ctrl-C in the terminal reaches the
benchmark, which then stops its servers in order, instead of reaching every server at once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType

import psutil

LOOPBACK = "127.0.0.1"
TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"
DCMTK_DIR = Path(os.environ.get("BENCH_DCMTK_BIN", "/usr/bin"))


class BenchError(RuntimeError):
    """A server or tool did not do what the benchmark needs; the message says why."""


def test_support() -> None:
    """Make the test suite's helpers (``tests/support``) importable: the benchmark starts
    PostgreSQL, SeaweedFS and the CT generator through the same code as the tests."""
    if str(TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(TESTS_DIR))


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that nothing listens on right now."""
    test_support()
    from support.ports import free_ports as pick

    return pick(count)


def free_port() -> int:
    return free_ports(1)[0]


def is_listening(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def dcmtk_tool(name: str) -> str:
    """Path of a dcmtk program (Debian package `dcmtk`).

    Looked up in /usr/bin, not PATH: pynetdicom installs console scripts with the same names
    (storescu, findscu, storescp) that are not dcmtk and behave differently.
    """
    path = DCMTK_DIR / name
    if not path.is_file():
        raise BenchError(f"dcmtk's {name} not found at {path}: apt-get install dcmtk")
    return str(path)


def dcmtk_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for any process built on dcmtk's network layer (tools and Orthanc).

    dcmtk 3.6.7 leaves Nagle's algorithm on unless TCP_NODELAY=1 is set; every DIMSE
    exchange on loopback then stalls ~40 ms and the figures measure the kernel, not the server.
    """
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    env.update(extra or {})
    return env


def log_tail(path: Path, lines: int = 30) -> str:
    test_support()
    from support import log_tail as tail

    return tail(path, lines)


class Service:
    """One long-running server process with its log file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = dict(env) if env is not None else dict(os.environ)
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.log_offset = 0

    def log_since_start(self) -> str:
        """What the process has logged since this start (the log file is appended to)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BenchError(f"{self.name} is not running")
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, ready: Callable[[], bool], *, timeout: float = 60.0) -> float:
        """Poll `ready` until it is true; the seconds it took. Fails fast if the process exits."""
        began = time.monotonic()
        while True:
            if self.process is None or self.process.poll() is not None:
                code = self.process.returncode if self.process else None
                raise BenchError(
                    f"{self.name} exited (status {code}) while starting; log {self.log_path}:\n"
                    f"{log_tail(self.log_path)}"
                )
            if ready():
                return time.monotonic() - began
            if time.monotonic() - began > timeout:
                raise BenchError(
                    f"{self.name} not ready after {timeout:.0f} s; log {self.log_path}:\n"
                    f"{log_tail(self.log_path)}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group; SIGKILL it if it is still there after `timeout`."""
        process = self.process
        if process is None:
            return
        self.process = None
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout)
        # Children that outlived their parent (same group) are ours too.
        _signal_group(process.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def run_tool(
    argv: list[str], *, env: Mapping[str, str] | None = None, timeout: float = 600.0
) -> subprocess.CompletedProcess[str]:
    """Run a short-lived tool to completion, capturing its output."""
    return subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def tree_memory(pids: Iterable[int]) -> tuple[int, int]:
    """(RSS, PSS) in bytes of the processes and all their descendants, summed.

    Summed RSS counts pages shared between processes (a forked or spawned SCP child's
    libraries) once per process; PSS divides each shared page between its sharers, so the
    summed PSS is what the tree really costs. Without permission to read smaps, PSS is 0.
    """
    seen: set[int] = set()
    rss = pss = 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in family:
            if proc.pid in seen:
                continue
            seen.add(proc.pid)
            try:
                full = proc.memory_full_info()
            except psutil.AccessDenied:
                with contextlib.suppress(psutil.Error):
                    rss += proc.memory_info().rss
                continue
            except psutil.Error:
                continue
            rss += full.rss
            pss += getattr(full, "pss", 0)
    return rss, pss


class RssSampler:
    """Samples the memory of process trees every `interval` seconds; keeps the peaks.

    Use it as a context manager around the work, then read `peak_rss` and `peak_pss` (bytes).
    """

    def __init__(self, pids: Callable[[], list[int]], interval: float = 0.1) -> None:
        self._pids = pids
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak_rss = 0
        self.peak_pss = 0
        self.samples = 0

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _sample(self) -> None:
        try:
            rss, pss = tree_memory(self._pids())
        except Exception:  # a server between restarts has no pids; never kill the sampler
            return
        self.samples += 1
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
