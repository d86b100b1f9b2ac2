"""Store benchmark: dcmtk storescu sends the same files to every target; throughput and memory.

Cases, in order, against one running target (each sends instances it does not hold yet):
- ct-1:    the CT series, one association (one storescu);
- ct-4:    a copy of the series with new UIDs, four storescu processes in parallel, each with
           a quarter of the files;
- small-1: the small studies in one association;
- ct-4/Np: Noctis only: another copy, four in parallel, with the number of SCP processes the
           target does not run by default (NOCTIS_SCP_PROCESSES: ct-4/1p for `noctis serve`
           on two CPUs or more, ct-4/2p for `noctis scp`).

A case's time runs from starting the first storescu to the exit of the last one. After each
case the target must hold every instance sent so far, by its own count; otherwise the case is
marked failed and its figures are not compared (a server that drops data cannot look fast).

Over the same interval, the CPU time (user + system) of each component, per instance sent:
the server's process tree, its PostgreSQL and S3 server (`Target.backing_pids`), the storescu
processes, the benchmark itself, and the whole machine's busy CPU (`bench.cpu.CpuMeter`).
"""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.cpu import CpuMeter
from bench.data import Dataset, FileSet
from bench.procs import LOOPBACK, RssSampler, dcmtk_environment, dcmtk_tool
from bench.target import CALLING_AE, Target, wait_for_count


@dataclass
class StoreCase:
    name: str
    description: str
    files: FileSet
    associations: int
    # Noctis only: SCP processes sharing the port (None: the target's default)
    scp_processes: int | None = None


@dataclass
class StoreResult:
    target: str
    case: str
    instances: int
    bytes: int
    seconds: float
    instances_per_s: float
    mb_per_s: float
    peak_rss_mb: float
    peak_pss_mb: float
    expected_total: int
    counted_total: int
    ok: bool
    error: str = ""
    round: int = 1
    scp_processes: int | None = None  # Noctis: SCP processes that received
    # CPU ms (user + system) per instance sent, by component: "server", "database",
    # "object_store" (those the target has), "sender" (storescu), "harness" (the benchmark
    # process), "kernel" (kernel threads), "other_processes" (every other process), "machine"
    # (every busy CPU of the machine).
    cpu_ms: dict[str, float] = field(default_factory=dict)
    machine_busy: float = math.nan  # the machine's busy share of all its CPUs, 0-1
    cpu_processes: dict[str, int] = field(default_factory=dict)  # processes in each tree
    # CPU ms per instance of the five processes outside the components that used the most
    # (kernel threads by name, other people's work): what the gap up to "machine" is made of.
    cpu_others_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cases(dataset: Dataset, *, other_scp_processes: int | None) -> list[StoreCase]:
    """The cases above; the last with ``other_scp_processes`` if given."""
    found = [
        StoreCase("ct-1", "CT series, 1 association", dataset.ct, 1),
        StoreCase("ct-4", "CT series, 4 associations", dataset.ct_copies[0], 4),
        StoreCase("small-1", "small studies, 1 association", dataset.small, 1),
    ]
    if other_scp_processes is not None:
        count = other_scp_processes
        found.append(
            StoreCase(
                f"ct-4/{count}p",
                f"CT series, 4 assoc., {count} SCP process{'es' if count > 1 else ''}",
                dataset.ct_copies[1],
                4,
                count,
            )
        )
    return found


def run_cases(target: Target, store_cases: list[StoreCase]) -> list[StoreResult]:
    """Send each case to the running target, verifying its count after each."""
    results: list[StoreResult] = []
    expected = target.count_instances()
    for case in store_cases:
        if case.scp_processes is not None and not target.set_scp_processes(case.scp_processes):
            continue
        expected += case.files.count
        results.append(_run_case(target, case, expected))
    return results


def load(target: Target, filesets: list[FileSet]) -> None:
    """Send files without measuring (the web benchmark's data when `store` did not run)."""
    expected = target.count_instances()
    for fileset in filesets:
        expected += fileset.count
        error = send(target, fileset.files, associations=1)
        counted = wait_for_count(target, expected)
        if error or counted != expected:
            raise RuntimeError(
                f"{target.name} holds {counted} of {expected} instances after loading "
                f"{fileset.name}: {error or 'count mismatch'}"
            )


def _run_case(target: Target, case: StoreCase, expected: int) -> StoreResult:
    trees: dict[str, Callable[[], list[int]]] = {"server": target.server_pids}
    trees.update({name: _backing(target, name) for name in target.backing_pids()})
    # "sender" is getrusage(RUSAGE_CHILDREN): the CPU of the benchmark's children that
    # terminated and were waited for inside the meter. Only send()'s storescu processes are:
    # the servers (Service, tests/support spawn) are children too but are waited for only
    # when stopped or restarted (set_scp_processes, before the case), the RSS sampler and the
    # meter read /proc and start no process, and wait_for_count comes after the meter.
    with RssSampler(target.server_pids) as rss, CpuMeter(trees) as cpu:
        began = time.perf_counter()
        error = send(target, case.files.files, associations=case.associations)
        seconds = time.perf_counter() - began
    counted = wait_for_count(target, expected)
    if counted != expected and not error:
        error = f"holds {counted} instances, expected {expected}"
    return StoreResult(
        target=target.name,
        case=case.name,
        instances=case.files.count,
        bytes=case.files.bytes,
        seconds=seconds,
        instances_per_s=case.files.count / seconds,
        mb_per_s=case.files.bytes / seconds / 1e6,
        peak_rss_mb=rss.peak_rss / 2**20,
        peak_pss_mb=rss.peak_pss / 2**20,
        expected_total=expected,
        counted_total=counted,
        ok=not error,
        error=error,
        cpu_ms={name: s * 1000 / case.files.count for name, s in cpu.seconds.items()},
        machine_busy=cpu.busy,
        cpu_processes=cpu.processes,
        cpu_others_ms={name: s * 1000 / case.files.count for name, s in cpu.others.items()},
        scp_processes=target.scp_processes,
    )


def _backing(target: Target, component: str) -> Callable[[], list[int]]:
    return lambda: target.backing_pids().get(component, [])


def send(target: Target, files: list[Path], *, associations: int) -> str:
    """Send `files` with `associations` storescu processes at once; "" or what went wrong."""
    return "; ".join(send_each(target, files, associations=associations))


def send_each(
    target: Target, files: list[Path], *, associations: int, timeout: float | None = None
) -> list[str]:
    """Send `files` with `associations` storescu processes at once; what went wrong with each
    process that failed (one entry per failed storescu). A storescu still running `timeout`
    seconds after the start is killed and counts as failed."""
    count = len(files)  # contiguous quarters, as a modality splitting a series would
    chunks = [
        files[i * count // associations : (i + 1) * count // associations]
        for i in range(associations)
    ]
    base = [
        dcmtk_tool("storescu"),
        "-aet",
        CALLING_AE,
        "-aec",
        target.ae_title,
        LOOPBACK,
        str(target.dicom_port),
    ]
    env = dcmtk_environment()
    processes = [
        subprocess.Popen(
            [*base, *map(str, chunk)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for chunk in chunks
        if chunk
    ]
    errors = []
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        for process in processes:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                output, _ = process.communicate(timeout=remaining)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                errors.append(f"storescu still sending after {timeout:.0f} s: killed")
                continue
            if process.returncode != 0:
                tail = output.decode(errors="replace").strip().splitlines()[-3:]
                errors.append(f"storescu exited {process.returncode}: {' | '.join(tail)}")
    finally:  # interrupted: no storescu outlives the benchmark
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return errors
