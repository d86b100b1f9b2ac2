"""The load run's table: each target's baseline, quiet and flood phases side by side."""

from __future__ import annotations

import math
from collections.abc import Callable

from rich.table import Table

from bench.load import ASSOCIATIONS, CONCURRENCY, FLOOD_CLIENTS, Latency, LoadPhase

# CPU components shown, with their labels: the serving processes, then PostgreSQL and the S3
# server (production), then the benchmark's own clients.
CPU_PARTS = {
    "server": "server",
    "database": "db",
    "object_store": "s3",
    "client": "client",
    "flood": "flood",
    "storescu": "storescu",
}


def load_table(phases: list[LoadPhase], cpus: int) -> Table:
    rounds = max((p.round for p in phases), default=1)
    table = Table(
        title=f"Load (issue 11): {CONCURRENCY} concurrent QIDO + metadata requests; quiet and "
        f"flood add {ASSOCIATIONS} storescu associations; flood adds {FLOOD_CLIENTS} clients "
        f"POSTing /login. {cpus} CPUs shared by the server and every client",
        title_justify="left",
    )
    table.add_column("")
    for phase in phases:
        suffix = f" r{phase.round}" if rounds > 1 else ""
        table.add_column(f"{phase.target}\n{phase.phase}{suffix}", justify="right")
    for label, cell in _rows():
        table.add_row(label, *(cell(p) if not p.error else "[red]FAILED[/red]" for p in phases))
    return table


def _rows() -> list[tuple[str, Callable[[LoadPhase], str]]]:
    return [
        ("legitimate errors", _errors),
        ("QIDO answers", lambda p: _answers(p.qido)),
        ("QIDO ms p50 / p95", lambda p: _latency(p.qido, "p50_ms", "p95_ms")),
        ("QIDO ms p99 / max", lambda p: _latency(p.qido, "p99_ms", "max_ms")),
        ("metadata answers", lambda p: _answers(p.metadata)),
        ("metadata ms p50 / p95", lambda p: _latency(p.metadata, "p50_ms", "p95_ms")),
        ("metadata ms p99 / max", lambda p: _latency(p.metadata, "p99_ms", "max_ms")),
        ("stores inst/s", _stores),
        ("login flood answers", _flood),
        ("peak RSS / PSS MB", lambda p: f"{p.peak_rss_mb:.0f} / {p.peak_pss_mb:.0f}"),
        ("CPU, % of one CPU", _cpu),
        ("machine busy", lambda p: f"{p.machine_busy:.0%}"),
    ]


def _errors(phase: LoadPhase) -> str:
    count = phase.legitimate_errors
    return "[green]0[/green]" if count == 0 else f"[red]{count:,}[/red]"


def _answers(latency: Latency) -> str:
    return f"{latency.requests} ({latency.per_s:.1f}/s)" if latency.requests else "0"


def _latency(latency: Latency, *figures: str) -> str:
    if not latency.requests:
        return "-"
    return " / ".join(f"{getattr(latency, name):,.0f}" for name in figures)


def _stores(phase: LoadPhase) -> str:
    if not phase.instances:
        return "-"
    if phase.store_errors or phase.missing:
        failed, stored = len(phase.store_errors), phase.instances - phase.missing
        return (
            f"[red]{failed} storescu failed\n{phase.missing} missing[/red]\n"
            f"{phase.instances_per_s:.1f} ({stored} of {phase.instances} in "
            f"{phase.store_seconds:.1f} s)"
        )
    return f"{phase.instances_per_s:.1f} ({phase.instances} in {phase.store_seconds:.1f} s)"


def _flood(phase: LoadPhase) -> str:
    flood = phase.flood
    if not flood:
        return "-"
    if "error" in flood:
        return f"[red]{flood['error']}[/red]"
    seconds = flood.get("seconds") or math.nan
    answers = sorted(flood.get("answers", {}).items())
    lines = [f"{status}: {n} ({n / seconds:.1f}/s)" for status, n in answers]
    lines.append(f"in flight at end: {flood.get('unanswered', '?')}")
    return "\n".join(lines)


def _cpu(phase: LoadPhase) -> str:
    parts = [
        f"{label} {phase.cpu_s[part] / phase.seconds:.0%}"
        for part, label in CPU_PARTS.items()
        if part in phase.cpu_s and phase.seconds
    ]
    return "\n".join(parts)


def load_failures(phases: list[LoadPhase]) -> list[tuple[str, str]]:
    """(target, what went wrong) for every phase in which a legitimate client saw an error."""
    found = []
    for phase in phases:
        where = f"load {phase.phase}" + (f" round {phase.round}" if phase.round > 1 else "")
        if phase.error:
            found.append((phase.target, f"{where}: {phase.error}"))
        for what, count in phase.http_errors.items():
            found.append((phase.target, f"{where}: {count} x {what}"))
        found += [(phase.target, f"{where}: {error}") for error in phase.store_errors]
        if phase.missing:
            found.append((phase.target, f"{where}: {phase.missing} instances missing after"))
    return found
