"""The retention scenario: what a retention run costs over a large index.

`python bench/run.py retention [--studies 100000] [--quick]`

An index (SQLite, then PostgreSQL with its durable defaults) is filled directly with N studies
of one series and one instance each (rows only: objects are not needed to measure the index
side; the sweep then removes objects that are not there, which the stores treat as done), 1%
of them received before the facility's retention. Measured: the run that deletes the expired
studies through the deletion path (index rows, tombstones, audit: what the request does), the
sweep of their tombstones, and a run that finds nothing to do (the steady-state cost of the
periodic job over N studies).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import backing
from bench.procs import BenchError

EXPIRED_SHARE = 100  # one study in this many is past retention
CHUNK = 5000


@dataclass
class RetentionResult:
    database: str
    studies: int
    expired: int
    delete_run_s: float = 0.0
    sweep_s: float = 0.0
    idle_run_ms: float = 0.0
    error: str = ""

    def row(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _fill(runtime: Any, facility_id: int, studies: int) -> int:
    """Insert ``studies`` studies (patient, study, series, instance rows); returns how many
    were made old enough to expire."""
    from noctis.index.models import Instance, Patient, Series, Study

    now = datetime.now(UTC)
    old = now - timedelta(days=400)
    expired = 0
    with runtime.engine.begin() as conn:
        for start in range(0, studies, CHUNK):
            numbers = range(start, min(start + CHUNK, studies))
            conn.execute(
                Patient.__table__.insert(),
                [{"facility_id": facility_id, "patient_id": f"P{n}"} for n in numbers],
            )
            patient_ids = dict(
                conn.execute(
                    Patient.__table__.select()
                    .with_only_columns(Patient.patient_id, Patient.id)
                    .where(Patient.patient_id.in_([f"P{n}" for n in numbers]))
                ).all()
            )
            conn.execute(
                Study.__table__.insert(),
                [
                    {
                        "facility_id": facility_id,
                        "patient_pk": patient_ids[f"P{n}"],
                        "patient_id": f"P{n}",
                        "study_instance_uid": f"1.2.826.0.1.3680043.10.1.{n}",
                        "study_date": "20240101",
                        "number_of_series": 1,
                        "number_of_instances": 1,
                        "size_bytes": 1000,
                        "created_at": old if n % EXPIRED_SHARE == 0 else now,
                        "updated_at": now,
                    }
                    for n in numbers
                ],
            )
            expired += sum(1 for n in numbers if n % EXPIRED_SHARE == 0)
            study_ids = dict(
                conn.execute(
                    Study.__table__.select()
                    .with_only_columns(Study.study_instance_uid, Study.id)
                    .where(Study.patient_id.in_([f"P{n}" for n in numbers]))
                ).all()
            )
            conn.execute(
                Series.__table__.insert(),
                [
                    {
                        "facility_id": facility_id,
                        "study_pk": study_ids[f"1.2.826.0.1.3680043.10.1.{n}"],
                        "series_instance_uid": f"1.2.826.0.1.3680043.10.2.{n}",
                        "modality": "CT",
                        "number_of_instances": 1,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for n in numbers
                ],
            )
            series_ids = dict(
                conn.execute(
                    Series.__table__.select()
                    .with_only_columns(Series.series_instance_uid, Series.id)
                    .where(
                        Series.series_instance_uid.in_(
                            [f"1.2.826.0.1.3680043.10.2.{n}" for n in numbers]
                        )
                    )
                ).all()
            )
            conn.execute(
                Instance.__table__.insert(),
                [
                    {
                        "facility_id": facility_id,
                        "series_pk": series_ids[f"1.2.826.0.1.3680043.10.2.{n}"],
                        "sop_instance_uid": f"1.2.826.0.1.3680043.10.3.{n}",
                        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                        "transfer_syntax_uid": "1.2.840.10008.1.2.1",
                        "object_key": f"bench/1.2.826.0.1.3680043.10.1.{n}/x/{n}.dcm",
                        "size_bytes": 1000,
                        "sha256": "0" * 64,
                        "created_at": now,
                    }
                    for n in numbers
                ],
            )
    return expired


def measure(database: str, url: str, data_dir: Path, studies: int) -> RetentionResult:
    from noctis.core.deletion import sweep_tombstones
    from noctis.core.facilities import apply_facility
    from noctis.core.queue import NullQueue
    from noctis.core.retention import expire_studies
    from noctis.core.runtime import Runtime
    from noctis.index.migrate import upgrade
    from noctis.settings import Settings
    from noctis.specs.facility import FacilitySpec

    upgrade(url)
    settings = Settings(data_dir=data_dir, database_url=url)
    runtime = Runtime.open(settings, queue=NullQueue())
    try:
        spec = FacilitySpec.model_validate({"retention": {"days": 365, "after": "received"}})
        with runtime.sessions.begin() as session:
            facility_id = apply_facility(session, "bench", spec).id
        expired = _fill(runtime, facility_id, studies)
        result = RetentionResult(database, studies, expired)
        began = time.perf_counter()
        report = expire_studies(runtime, batch=studies)
        result.delete_run_s = time.perf_counter() - began
        if report.deleted.get("bench") != expired:
            raise BenchError(f"retention deleted {report.deleted}, expected {expired}")
        began = time.perf_counter()
        sweep_tombstones(runtime)
        result.sweep_s = time.perf_counter() - began
        began = time.perf_counter()
        if expire_studies(runtime, batch=studies).deleted:
            raise BenchError("a second retention run found more to delete")
        result.idle_run_ms = (time.perf_counter() - began) * 1000
        return result
    finally:
        runtime.close()


def main(console: Console, studies: int) -> list[RetentionResult]:
    results = []
    with tempfile.TemporaryDirectory(prefix="noctis-bench-retention-") as tmp:
        root = Path(tmp)
        databases: list[tuple[str, Any]] = [("sqlite", None), ("postgresql", "pg")]
        for name, _ in databases:
            pg = None
            try:
                if name == "sqlite":
                    url = f"sqlite:///{root / 'index.sqlite3'}"
                else:
                    pg = backing.start_postgres(durable=True)
                    url = pg.create_database("retention")
                with console.status(f"{name}: {studies:,} studies, retention run"):
                    result = measure(name, url, root, studies)
            except (BenchError, OSError, RuntimeError, ValueError) as exc:
                result = RetentionResult(name, studies, 0, error=str(exc))
                console.print(f"[red]{name} failed:[/red] {exc}")
            finally:
                if pg is not None:
                    pg.stop()
            results.append(result)
            if not result.error:
                console.log(
                    f"{name}: {studies:,} studies, {result.expired} expired: deleted in "
                    f"{result.delete_run_s:.1f} s ({result.expired / result.delete_run_s:.0f}"
                    f" studies/s), swept in {result.sweep_s:.1f} s; a run with nothing "
                    f"to do {result.idle_run_ms:.0f} ms"
                )
    table = Table(
        "index", "studies", "expired", "delete run (s)", "sweep (s)", "run, nothing to do (ms)"
    )
    for r in results:
        table.add_row(
            r.database,
            f"{r.studies:,}",
            str(r.expired),
            f"{r.delete_run_s:.1f}" if not r.error else "failed",
            f"{r.sweep_s:.1f}" if not r.error else r.error[:50],
            f"{r.idle_run_ms:.0f}" if not r.error else "",
        )
    console.print(table)
    return results
