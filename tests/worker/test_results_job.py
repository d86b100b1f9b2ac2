"""The results scan runs as a worker's periodic job: a critical SR stored while it runs makes
its study STAT on the worklist without anyone calling the scan."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from noctis.index.models import Study
from noctis.index.workflow import StudyWorkflow
from noctis.worker.periodic import PeriodicRunner
from noctis.worker.tasks import PERIODIC_JOBS
from support import analysis as an
from support import wait
from support.archive import embedded_settings, open_runtime, register_facility
from support.dicomdata import small_ct
from support.incoming import ingest_file


def test_the_periodic_results_job_flags_a_critical_sr(tmp_path: Path) -> None:
    runtime = open_runtime(
        embedded_settings(tmp_path, results_scan_seconds=0.1, results_critical_codes="SCT:50960005")
    )
    facility = register_facility(runtime, "north")
    image = small_ct()
    image.save_as(tmp_path / "ct.dcm", enforce_file_format=True)
    ingest_file(runtime, facility, tmp_path / "ct.dcm")
    # a code the archive's settings list (NOCTIS_RESULTS_CRITICAL_CODES), no Facility field
    result = an.sr(tmp_path, str(image.StudyInstanceUID), an.coded(an.FINDING, an.HEMORRHAGE))
    jobs = [job for job in PERIODIC_JOBS if job.name == "results"]
    runner = PeriodicRunner(runtime, jobs).start()
    try:
        ingest_file(runtime, facility, result)

        def critical() -> bool:
            with runtime.sessions() as session:
                study = session.scalars(select(Study)).one()
                row = session.get(StudyWorkflow, study.id)
                return row is not None and row.critical and row.priority == 2

        wait.until(critical, timeout=15, what="the study flagged critical by the results job")
    finally:
        runner.stop()
        runtime.close()
