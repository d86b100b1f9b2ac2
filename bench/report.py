"""The figures, side by side: rich tables on the terminal and a JSON file per run."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.load import LoadPhase
from bench.load_table import load_failures, load_table
from bench.store import StoreResult
from bench.timing import Timing, pooled

RSS_LIMIT_MB = 300.0
# Which Orthanc each Noctis deployment is held against (the targets).
PEERS = {"noctis-production": "orthanc-pg", "noctis-embedded": "orthanc-sqlite"}
PEER_NAMES = ("storescp", "orthanc-sqlite", "orthanc-pg")
# A case Orthanc has no counterpart for is compared with the nearest one it has.
SAME_LOAD = {"ct-4/1p": "ct-4", "ct-4/2p": "ct-4"}
# The CPU components the CPU table shows, in order, with their short names; then "rest": the
# CPU of the machine outside them (the benchmark itself, kernel threads, other processes).
CPU_COMPONENTS = {"server": "server", "database": "db", "object_store": "s3", "sender": "sender"}
CPU_REST = ("harness", "kernel", "other_processes")


@dataclass
class Results:
    meta: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)  # target name -> label
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)  # details, errors
    store: list[StoreResult] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)
    load: list[LoadPhase] = field(default_factory=list)

    @property
    def rounds(self) -> int:
        rounds = [r.round for r in self.store] + [t.round for t in self.timings]
        rounds += [p.round for p in self.load]
        return max(rounds, default=0)

    def store_summary(self) -> list[StoreResult]:
        """One result per (target, case): the median over rounds (peak memory: the highest)."""
        groups: dict[tuple[str, str], list[StoreResult]] = {}
        for result in self.store:
            groups.setdefault((result.target, result.case), []).append(result)
        return [_median_result(group) for group in groups.values()]

    def timing_summary(self) -> list[Timing]:
        """One timing per (target, request), the samples of every round pooled."""
        groups: dict[tuple[str, str], list[Timing]] = {}
        for timing in self.timings:
            groups.setdefault((timing.target, timing.name), []).append(timing)
        return [group[0] if len(group) == 1 else pooled(group) for group in groups.values()]

    def store_result(self, target: str, case: str) -> StoreResult | None:
        for result in self.store_summary():
            if result.target == target and result.case == case:
                return result
        return None

    def timing(self, target: str, name: str) -> Timing | None:
        for timing in self.timing_summary():
            if timing.target == target and timing.name == name:
                return timing
        return None


def _median_result(group: list[StoreResult]) -> StoreResult:
    if len(group) == 1:
        return group[0]
    ok = [r for r in group if r.ok]
    errors = "; ".join(f"round {r.round}: {r.error}" for r in group if not r.ok)
    basis = ok or group
    last = group[-1]
    return StoreResult(
        target=last.target,
        case=last.case,
        instances=last.instances,
        bytes=last.bytes,
        seconds=statistics.median(r.seconds for r in basis),
        instances_per_s=statistics.median(r.instances_per_s for r in basis),
        mb_per_s=statistics.median(r.mb_per_s for r in basis),
        peak_rss_mb=max(r.peak_rss_mb for r in basis),
        peak_pss_mb=max(r.peak_pss_mb for r in basis),
        expected_total=last.expected_total,
        counted_total=last.counted_total,
        ok=not errors,
        error=errors,
        round=0,
        cpu_ms={
            name: statistics.median(r.cpu_ms[name] for r in basis if name in r.cpu_ms)
            for name in dict.fromkeys(name for r in basis for name in r.cpu_ms)
        },
        machine_busy=_median(r.machine_busy for r in basis),
        cpu_processes=last.cpu_processes,
        cpu_others_ms=last.cpu_others_ms,
        scp_processes=last.scp_processes,
    )


def _received_by(result: StoreResult) -> int:
    """The SCP processes that received (results written before they were recorded: ct-4/2p
    was the only case with two)."""
    if result.scp_processes is not None:
        return result.scp_processes
    return 2 if result.case == "ct-4/2p" else 1


def _median(values: Any) -> float:
    """The median of the figures that were measured (not NaN); NaN if none was."""
    found = [v for v in values if not math.isnan(v)]
    return statistics.median(found) if found else math.nan


@dataclass
class Goal:
    what: str
    ours: float
    theirs: float
    passed: bool
    ratio: float


def goals(results: Results) -> list[Goal]:
    """The issue's targets: Noctis at least as fast as its Orthanc counterpart; RSS < 300 MB."""
    found: list[Goal] = []
    for ours, theirs in PEERS.items():
        for result in results.store_summary():
            if result.target != ours:
                continue
            peer = results.store_result(theirs, SAME_LOAD.get(result.case, result.case))
            if peer is None or not peer.ok or not result.ok:
                continue
            ratio = result.instances_per_s / peer.instances_per_s
            found.append(
                Goal(
                    f"{ours} {result.case} inst/s >= {theirs} {peer.case}",
                    result.instances_per_s,
                    peer.instances_per_s,
                    ratio >= 1.0,
                    ratio,
                )
            )
        for timing in results.timing_summary():
            if timing.target != ours:
                continue
            peer_timing = results.timing(theirs, timing.name)
            if peer_timing is None or not peer_timing.ok or not timing.ok:
                continue
            ratio = peer_timing.median_ms / timing.median_ms  # > 1: we are faster
            found.append(
                Goal(
                    f"{ours} {timing.name} median <= {theirs}",
                    timing.median_ms,
                    peer_timing.median_ms,
                    ratio >= 1.0,
                    ratio,
                )
            )
        ran = results.store_summary()
        for count in sorted({_received_by(r) for r in ran if r.target == ours}):
            label = f"{count} SCP process{'es' if count > 1 else ''}"
            rss = [
                r.peak_rss_mb for r in ran if r.target == ours and r.ok and _received_by(r) == count
            ]
            if rss:
                peak = max(rss)
                found.append(
                    Goal(
                        f"{ours} peak RSS < {RSS_LIMIT_MB:.0f} MB ({label})",
                        peak,
                        RSS_LIMIT_MB,
                        peak < RSS_LIMIT_MB,
                        RSS_LIMIT_MB / peak,
                    )
                )
    return found


def print_report(results: Results, console: Console | None = None) -> None:
    console = console or Console()
    meta = results.meta
    rounds = f"  {results.rounds} rounds (medians)" if results.rounds > 1 else ""
    console.print(
        f"[bold]Noctis benchmark[/bold] {meta['started']}  {meta['mode']}{rounds}  "
        f"cpus={meta['host']['cpus']}  load before={_load(meta['host'].get('load_before'))} "
        f"after={_load(meta['host'].get('load_after'))}"
    )
    if results.store:
        console.print(_store_table(results))
        console.print(_cpu_table(results))
        names = {r.target for r in results.store}
        if any(n.startswith("noctis") for n in names) and any(n in PEER_NAMES for n in names):
            console.print(_ratio_table(results))
    if results.timings:
        console.print(_timing_table(results))
    if results.load:
        console.print(load_table(results.load, meta["host"]["cpus"]))
    found = goals(results)
    if found:
        console.print(_goal_table(found))
    failures = [(n, d["error"]) for n, d in results.targets.items() if d.get("error")]
    failures += [(r.target, f"{r.case}: {r.error}") for r in results.store_summary() if not r.ok]
    failures += [(t.target, f"{t.name}: {t.error}") for t in results.timing_summary() if not t.ok]
    failures += load_failures(results.load)
    for name, error in failures:
        console.print(f"[red]{name}[/red]: {error}")


def _targets_in(rows: list[Any], results: Results) -> list[str]:
    seen = {row.target for row in rows}
    return [name for name in results.labels if name in seen]


def _store_table(results: Results) -> Table:
    def cell(result: StoreResult) -> str:
        pss = f" (PSS {result.peak_pss_mb:,.0f})" if result.peak_pss_mb else ""
        return (
            f"{result.instances_per_s:,.0f}/s {result.mb_per_s:,.0f} MB/s\n"
            f"RSS {result.peak_rss_mb:,.0f} MB{pss}"
        )

    def row_label(case: str) -> str:
        sample = next(r for r in results.store if r.case == case)
        return f"{case}\n{sample.instances} inst., {sample.bytes / 1e6:,.0f} MB"

    return _per_case_table(
        results,
        "Store (storescu -> target): instances/s, MB/s; peak RSS (PSS) of the server, MB",
        cell,
        row_label,
    )


def _cpu_table(results: Results) -> Table:
    def cell(result: StoreResult) -> str:
        if not result.cpu_ms:
            return "-"
        parts = [
            f"{short} {result.cpu_ms[key]:,.1f}"
            for key, short in CPU_COMPONENTS.items()
            if key in result.cpu_ms
        ]
        machine = result.cpu_ms.get("machine", math.nan)
        busy = "" if math.isnan(result.machine_busy) else f" ({result.machine_busy:.0%})"
        rest = [result.cpu_ms[key] for key in CPU_REST if key in result.cpu_ms]
        rest_cell = f" · rest {sum(rest):,.1f}" if rest else ""
        return " · ".join(parts) + f"\nmachine {machine:,.1f}{busy}{rest_cell}"

    return _per_case_table(
        results,
        "CPU per instance, ms: server, its PostgreSQL (db) and S3 (s3), storescu (sender); "
        "machine: all of it (busy %), rest: none of those",
        cell,
        lambda case: case,
    )


def _per_case_table(
    results: Results,
    title: str,
    cell: Callable[[StoreResult], str],
    row_label: Callable[[str], str],
) -> Table:
    """A row per store case, a column per target; ``cell`` writes a successful result."""
    names = _targets_in(results.store, results)
    table = Table(title=title)
    table.add_column("case")
    for name in names:
        table.add_column(results.labels[name], justify="right")
    for case in dict.fromkeys(r.case for r in results.store):
        cells = []
        for name in names:
            result = results.store_result(name, case)
            if result is None:
                cells.append("")
            elif not result.ok:
                cells.append("[red]FAILED[/red]")
            else:
                cells.append(cell(result))
        table.add_row(row_label(case), *cells)
    return table


def _ratio_table(results: Results) -> Table:
    table = Table(title="Store ratios: Noctis instances/s / other instances/s")
    table.add_column("Noctis")
    table.add_column("case")
    others = [n for n in PEER_NAMES if n in results.labels]
    for other in others:
        table.add_column(f"vs {results.labels[other]}", justify="right")
    for ours in (n for n in results.labels if n.startswith("noctis")):
        for result in (r for r in results.store_summary() if r.target == ours):
            cells = []
            for other in others:
                peer = results.store_result(other, SAME_LOAD.get(result.case, result.case))
                ok = result.ok and peer is not None and peer.ok
                cells.append(
                    f"{result.instances_per_s / peer.instances_per_s:.2f}x" if ok and peer else "-"
                )
            table.add_row(results.labels[ours], result.case, *cells)
    return table


def _timing_table(results: Results) -> Table:
    names = _targets_in(results.timings, results)
    table = Table(
        title="Query and retrieve: median / p95 ms (warm, after one warm-up); first = warm-up"
    )
    table.add_column("request")
    for name in names:
        table.add_column(results.labels[name], justify="right")
    for request in dict.fromkeys(t.name for t in results.timings):
        cells = []
        for name in names:
            timing = results.timing(name, request)
            if timing is None:
                cells.append("")
            elif not timing.ok:
                cells.append("[red]FAILED[/red]")
            else:
                cells.append(
                    f"{timing.median_ms:,.1f} / {timing.p95_ms:,.1f}\n"
                    f"first {timing.first_ms:,.0f}; {timing.detail}"
                )
        runs = max((t.runs for t in results.timing_summary() if t.name == request), default=0)
        table.add_row(f"{request}\n{runs} runs", *cells)
    return table


def _goal_table(found: list[Goal]) -> Table:
    table = Table(title="Targets (issues 2 and 3)")
    for column in ("goal", "Noctis", "reference", "ratio", ""):
        table.add_column(column, justify="left" if column == "goal" else "right")
    for goal in found:
        mark = "[green]met[/green]" if goal.passed else "[red]missed[/red]"
        table.add_row(
            goal.what, f"{goal.ours:,.1f}", f"{goal.theirs:,.1f}", f"{goal.ratio:.2f}x", mark
        )
    return table


def _load(load: list[float] | None) -> str:
    return "/".join(f"{x:.2f}" for x in load) if load else "?"


def write_json(results: Results, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = directory / f"{stamp}.json"
    document = {
        **results.meta,
        "targets": {
            name: {"label": results.labels.get(name, name), **details}
            for name, details in results.targets.items()
        },
        "rounds": results.rounds,
        "store": [r.as_dict() for r in results.store_summary()],
        "timings": [t.as_dict() for t in results.timing_summary()],
        "store_by_round": [r.as_dict() for r in results.store],
        "timings_by_round": [t.as_dict() for t in results.timings],
        "goals": [g.__dict__ for g in goals(results)],
        "load": [p.as_dict() for p in results.load],
    }
    path.write_text(json.dumps(_clean(document), indent=2, default=str) + "\n")
    return path


def _clean(value: Any) -> Any:
    """NaN (a figure that was not measured) becomes null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
