"""What signing a report costs: rendering its PDF (ReportLab) and its two DICOM documents
(Encapsulated PDF, Basic Text SR), storing both in the study through ingest, and the signing
transaction around them.

`python bench/run.py report [--runs 30] [--quick]`

On SQLite and on PostgreSQL (its durable defaults), with the filesystem object store: a study
of one CT instance is stored, a report drafted and signed final, then amended and signed again
`runs` times (each signature renders and stores a new PDF and SR). Measured per signature:
the render alone (PDF + both Part 10 instances) and the whole signature (transaction, render,
two ingests, the version marked stored), p50 and p95.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import backing
from bench.procs import BenchError, test_support

TEXT = (
    "CLINICAL HISTORY: cough for three weeks.\n"
    "FINDINGS:\n" + "No consolidation, effusion or pneumothorax. " * 12 + "\n\n"
    "IMPRESSION: No acute cardiopulmonary abnormality."
)


@dataclass
class ReportResult:
    database: str
    runs: int
    render_ms: list[float] = field(default_factory=list)
    sign_ms: list[float] = field(default_factory=list)
    pdf_bytes: int = 0
    error: str = ""

    def row(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "runs": self.runs,
            "render_p50_ms": _p(self.render_ms, 50),
            "render_p95_ms": _p(self.render_ms, 95),
            "sign_p50_ms": _p(self.sign_ms, 50),
            "sign_p95_ms": _p(self.sign_ms, 95),
            "pdf_bytes": self.pdf_bytes,
            "error": self.error,
        }


def _p(values: list[float], percent: int) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def measure(database: str, url: str, data_dir: Path, runs: int) -> ReportResult:
    test_support()
    from sqlalchemy import select

    from noctis.core.documents import store_document
    from noctis.core.facilities import ensure_default_facility
    from noctis.core.ingest import FacilityRef
    from noctis.core.queue import NullQueue
    from noctis.core.reports import amend, render_version, save_draft, sign
    from noctis.core.runtime import Runtime
    from noctis.core.workflow import Actor
    from noctis.index.migrate import upgrade
    from noctis.index.models import Study
    from noctis.index.reports import ReportVersion
    from noctis.settings import Settings
    from support.dicomdata import small_ct

    upgrade(url)
    runtime = Runtime.open(Settings(data_dir=data_dir, database_url=url), queue=NullQueue())
    reader = Actor("bench-radiologist", client="127.0.0.1")
    result = ReportResult(database, runs)
    try:
        with runtime.sessions.begin() as session:
            facility = ensure_default_facility(session)
            ref = FacilityRef(facility.id, facility.name)
        instance = small_ct(PatientName="Bench^Patient", AccessionNumber="BENCH1")
        path = data_dir / "ct.dcm"
        instance.save_as(path, enforce_file_format=True)
        store_document(runtime, ref, path.read_bytes())
        with runtime.sessions.begin() as session:
            study = session.scalars(
                select(Study).where(Study.study_instance_uid == instance.StudyInstanceUID)
            ).one()
            study_pk = study.id
            save_draft(session, study, TEXT, actor=reader)
        for run in range(runs + 1):  # the first signature warms ReportLab's fonts up
            if run:
                with runtime.sessions.begin() as session:
                    study = session.get(Study, study_pk)
                    amend(session, study, actor=reader)
                    save_draft(session, study, f"{TEXT}\nADDENDUM {run}.", actor=reader)
            began = time.perf_counter()
            signed = sign(runtime, study_pk, state="final", actor=reader)
            elapsed = (time.perf_counter() - began) * 1000
            if not signed.documents_stored:
                raise BenchError("the report's documents were not stored")
            with runtime.reader() as session:
                version = session.get(ReportVersion, signed.version_id)
                began = time.perf_counter()
                rendered = render_version(session, version)
                render = (time.perf_counter() - began) * 1000
            if run:
                result.sign_ms.append(elapsed)
                result.render_ms.append(render)
                result.pdf_bytes = len(rendered.pdf)
        return result
    finally:
        runtime.close()


def main(console: Console, runs: int) -> list[ReportResult]:
    results = []
    with tempfile.TemporaryDirectory(prefix="noctis-bench-report-") as tmp:
        for name in ("sqlite", "postgresql"):
            root = Path(tmp) / name
            root.mkdir()
            pg = None
            try:
                if name == "sqlite":
                    url = f"sqlite:///{root / 'index.sqlite3'}"
                else:
                    pg = backing.start_postgres(durable=True)
                    url = pg.create_database("reports")
                with console.status(f"{name}: {runs} report signatures"):
                    result = measure(name, url, root, runs)
            except (BenchError, OSError, RuntimeError, ValueError) as exc:
                result = ReportResult(name, runs, error=str(exc))
                console.print(f"[red]{name} failed:[/red] {exc}")
            finally:
                if pg is not None:
                    pg.stop()
            results.append(result)
    table = Table(
        "index",
        "signatures",
        "render p50 (ms)",
        "render p95 (ms)",
        "sign p50 (ms)",
        "sign p95 (ms)",
        "PDF bytes",
    )
    for r in results:
        row = r.row()
        if r.error:
            table.add_row(r.database, str(r.runs), "failed", r.error[:60], "", "", "")
            continue
        table.add_row(
            r.database,
            str(r.runs),
            f"{row['render_p50_ms']:.1f}",
            f"{row['render_p95_ms']:.1f}",
            f"{row['sign_p50_ms']:.1f}",
            f"{row['sign_p95_ms']:.1f}",
            f"{r.pdf_bytes:,}",
        )
    console.print(table)
    return results
