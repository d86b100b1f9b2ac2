"""CPU time per component of a store case: process trees, the sender, the whole machine.

`CpuMeter` reads every figure at the start and the end of a case; the store benchmark divides
the differences by the instances sent (bench/README.md, "CPU per instance").
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil


def tree_cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds of each process of the trees under `pids` (roots and all descendants).

    Each process counts its own user + system time and that of the children it has waited for
    (psutil's children_user, children_system): a PostgreSQL backend or a Noctis SCP child that
    exits and is reaped by its parent keeps its CPU in the parent's figure. So the difference of
    two sums is the trees' CPU in between, processes started in between counting from 0, as
    long as the roots live (a root's own parent, outside the tree, would reap it). Children are
    read before their parent, so a child reaped between the two reads is counted twice (read
    the other way it would be missed): a race of a few milliseconds, for processes that exit
    just then. The kernel counts these times in clock ticks (10 ms) per process.
    """
    found: dict[int, float] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            family = [*root.children(recursive=True), root]
        except psutil.Error:
            continue
        for proc in family:
            if proc.pid in found:
                continue
            with contextlib.suppress(psutil.Error):
                found[proc.pid] = _cpu_seconds(proc.cpu_times())
    return found


def _cpu_seconds(times: Any) -> float:
    return float(times.user + times.system + times.children_user + times.children_system)


KTHREADD = 2  # Linux: the parent of every kernel thread


def every_process_cpu() -> dict[tuple[int, float], tuple[str, bool, float]]:
    """(pid, start time) -> (name, is a kernel thread, CPU seconds as `tree_cpu_seconds`
    counts them) for every process on the machine."""
    found = {}
    for proc in psutil.process_iter(["name", "ppid", "create_time", "cpu_times"]):
        info = proc.info
        if info["cpu_times"] is None or info["create_time"] is None:
            continue
        kernel = proc.pid == KTHREADD or info["ppid"] == KTHREADD
        key = (proc.pid, info["create_time"])
        found[key] = (info["name"] or "?", kernel, _cpu_seconds(info["cpu_times"]))
    return found


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy since boot, summed over its CPUs.

    Everything but idle, iowait and steal (time the hypervisor gave to another guest: no
    process here ran): user and nice (which include guest time on Linux), system, irq and
    softirq, so also kernel threads (writeback, journal) that no process of a target owns.
    The kernel samples these at each clock tick per CPU: over a tenth of a second they are
    off by a few ticks (10 ms each).
    """
    times = psutil.cpu_times()
    busy = times.user + times.system
    for name in ("nice", "irq", "softirq"):
        busy += getattr(times, name, 0.0)
    return float(busy)


class CpuMeter:
    """CPU seconds between enter and exit: of process trees, of the benchmark's own reaped
    children, of the benchmark itself, of everything else and of the whole machine.

    `trees` maps a component name to a function giving its root pids (asked at both ends);
    after exit, `seconds` maps each component to its CPU seconds, plus "sender" (children of
    the benchmark that terminated and were waited for in between, from getrusage), "harness"
    (the benchmark process itself, every thread), "kernel" (kernel threads),
    "other_processes" (every other process on the machine that was there at the end) and
    "machine"
    (`machine_busy_seconds`); `others` names the five processes outside the trees that used
    the most (kernel threads included); `processes` says how many processes each tree had at
    the end, `wall` the elapsed seconds. The snapshots of every process are taken outside the
    interval the machine's figure covers, so reading /proc costs the figures nothing.
    """

    def __init__(self, trees: Mapping[str, Callable[[], list[int]]]) -> None:
        self._trees = dict(trees)
        self._start: dict[str, float] = {}
        self._everything: dict[tuple[int, float], tuple[str, bool, float]] = {}
        self.seconds: dict[str, float] = {}
        self.others: dict[str, float] = {}
        self.processes: dict[str, int] = {}
        self.wall = 0.0
        self.cpus = psutil.cpu_count() or os.cpu_count() or 1

    def __enter__(self) -> CpuMeter:
        self._everything = every_process_cpu()
        self._start = {}
        for name, pids in self._trees.items():
            with contextlib.suppress(Exception):  # no pids: the component is left out
                self._start[name] = sum(tree_cpu_seconds(pids()).values())
        self._children = _rusage_seconds(resource.RUSAGE_CHILDREN)
        self._self = _rusage_seconds(resource.RUSAGE_SELF)
        self._machine = machine_busy_seconds()
        self._began = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.wall = time.perf_counter() - self._began
        machine = machine_busy_seconds() - self._machine
        children = _rusage_seconds(resource.RUSAGE_CHILDREN) - self._children
        harness = _rusage_seconds(resource.RUSAGE_SELF) - self._self
        self.seconds = {}
        measured = {os.getpid()}
        for name, pids in self._trees.items():
            try:
                tree = tree_cpu_seconds(pids())
            except Exception:
                continue
            measured.update(tree)
            if name in self._start:
                self.seconds[name] = max(0.0, sum(tree.values()) - self._start[name])
                self.processes[name] = len(tree)
        kernel = other = 0.0
        by_label: dict[str, float] = {}
        for key, (name, is_kernel, seconds) in every_process_cpu().items():
            if key[0] in measured:
                continue
            before = self._everything.get(key)
            used = max(0.0, seconds - (before[2] if before else 0.0))
            if is_kernel:
                kernel += used
            else:
                other += used
            if used:
                label = name if is_kernel else _process_label(key[0], name)
                by_label[label] = by_label.get(label, 0.0) + used
        top = sorted(by_label.items(), key=lambda item: -item[1])[:5]
        self.others = dict(top)
        self.seconds.update(
            sender=children,
            harness=harness,
            kernel=kernel,
            other_processes=other,
            machine=machine,
        )

    @property
    def busy(self) -> float:
        """The machine's busy share over the interval: busy CPU / (wall time x CPUs)."""
        return self.seconds.get("machine", 0.0) / (self.wall * self.cpus) if self.wall else 0.0


def _process_label(pid: int, name: str) -> str:
    """A process's name; for an interpreter also what it runs ("python -m noctis.cli",
    "python pytest"), so that other people's work can be told from the benchmark's."""
    if not name.startswith(("python", "pytest")):
        return name
    try:
        argv = psutil.Process(pid).cmdline()
    except psutil.Error:
        return name
    args = [a for a in argv[1:] if not a.startswith("-") or a == "-m"]
    if args[:1] == ["-m"]:
        return " ".join([name, *args[:3]])  # python -m noctis.cli api
    return f"{name} {Path(args[0]).name}" if args else name


def _rusage_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime
