"""`python bench/run.py stable`: what the study-stable sweep costs over many studies.

Each worker process runs the sweep (``noctis.worker.stable.detect_stable_studies``) every
``NOCTIS_STABLE_SWEEP_SECONDS`` (10 s by default), so its cost with nothing to do is what an
archive pays all the time. The index is filled directly (one facility, N study rows written
an hour ago: no objects, the sweep reads only the index), on SQLite and on PostgreSQL (the
test support's server, with its durability settings left on), and timed:

- ``backlog``: sweeps declaring the N studies 500 at a time (NOCTIS_STABLE_SWEEP_BATCH): a
  worker started over an index none of whose studies was declared (e.g. after migrating);
  the time of one such sweep and of all of them;
- ``idle``: one sweep when every study is declared and nothing changed (median of runs);
- ``100 new``: one sweep after 100 of the studies received an instance (median of runs).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.backing import start_postgres
from bench.procs import BenchError, load_average

FULL_STUDIES = 100_000
QUICK_STUDIES = 5_000
RUNS = 7


def _fill(url: str, studies: int) -> None:
    from sqlalchemy import insert

    from noctis.index.db import open_index
    from noctis.index.migrate import upgrade
    from noctis.index.models import Facility, Patient, Study

    upgrade(url)
    index = open_index(url)
    try:
        written = datetime.now(UTC) - timedelta(hours=1)
        with index.sessions.begin() as session:
            facility = Facility(name="north", spec={})
            session.add(facility)
            session.flush()
            patient = Patient(facility_id=facility.id, patient_id="P")
            session.add(patient)
            session.flush()
            rows = [
                {
                    "facility_id": facility.id,
                    "patient_pk": patient.id,
                    "study_instance_uid": f"1.2.826.0.1.3680043.10.{n}",
                    "number_of_series": 1,
                    "number_of_instances": 100,
                    "created_at": written,
                    "updated_at": written,
                }
                for n in range(studies)
            ]
            for start in range(0, studies, 10_000):
                session.execute(insert(Study), rows[start : start + 10_000])
    finally:
        index.close()


def _touch(runtime: Any, count: int) -> None:
    """``count`` studies received an instance two seconds ago (past a 1 s quiet time)."""
    from sqlalchemy import select, update

    from noctis.index.models import Study

    moment = datetime.now(UTC) - timedelta(seconds=2)
    with runtime.sessions.begin() as session:
        pks = list(session.scalars(select(Study.id).order_by(Study.id).limit(count)))
        session.execute(update(Study).where(Study.id.in_(pks)).values(updated_at=moment))


def _timed(run: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = run()
    return (time.perf_counter() - started) * 1000, result


def measure(url: str, data_dir: Path, studies: int) -> dict[str, Any]:
    from noctis.core.runtime import Runtime
    from noctis.settings import Settings
    from noctis.worker.stable import detect_stable_studies

    _fill(url, studies)
    settings = Settings(
        mode="embedded", data_dir=data_dir, database_url=url, stable_after_seconds=1.0
    )
    runtime = Runtime.open(settings)  # tasks go nowhere: only the sweep is measured
    try:
        sweeps: list[float] = []
        declared = 0
        while declared < studies:
            ms, found = _timed(lambda: detect_stable_studies(runtime))
            if not found:
                raise BenchError(f"the sweep stopped after declaring {declared} of {studies}")
            sweeps.append(ms)
            declared += len(found)
        idle = []
        for _ in range(RUNS):
            ms, found = _timed(lambda: detect_stable_studies(runtime))
            assert found == [], "an idle sweep declared studies"
            idle.append(ms)
        changed = []
        for _ in range(RUNS):
            _touch(runtime, 100)
            ms, found = _timed(lambda: detect_stable_studies(runtime))
            assert len(found) == 100, len(found)
            changed.append(ms)
    finally:
        runtime.close()
    return {
        "studies": studies,
        "backlog_sweeps": len(sweeps),
        "backlog_sweep_ms": statistics.median(sweeps),
        "backlog_total_s": sum(sweeps) / 1000,
        "idle_ms": statistics.median(idle),
        "idle_runs_ms": idle,
        "new_100_ms": statistics.median(changed),
    }


def main(console: Console, results_dir: Path, *, quick: bool) -> int:
    studies = QUICK_STUDIES if quick else FULL_STUDIES
    load_before = list(load_average())
    results: dict[str, dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="noctis-bench-stable-") as tmp:
            root = Path(tmp)
            console.print(f"SQLite: {studies:,} studies")
            results["sqlite"] = measure(f"sqlite:///{root / 'index.sqlite3'}", root, studies)
            console.print(f"PostgreSQL: {studies:,} studies")
            server = start_postgres(durable=True)
            try:
                url = server.create_database("bench_stable")
                results["postgresql"] = measure(url, root, studies)
            finally:
                server.stop()
    except BenchError as exc:
        console.print(f"[red]{exc}[/red]")
        return 1
    table = Table(title=f"Study-stable sweep over {studies:,} studies (ms; medians)")
    for column in ("index", "backlog: one sweep (500)", "backlog: all, s", "idle", "100 new"):
        table.add_column(column, justify="left" if column == "index" else "right")
    for name, row in results.items():
        table.add_row(
            name,
            f"{row['backlog_sweep_ms']:.1f}",
            f"{row['backlog_total_s']:.1f}",
            f"{row['idle_ms']:.1f}",
            f"{row['new_100_ms']:.1f}",
        )
    console.print(table)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-stable.json"
    document = {
        "suite": "stable",
        "load_before": load_before,
        "load_after": list(load_average()),
        "results": results,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"results: {path}")
    return 0
