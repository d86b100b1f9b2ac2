"""`noctis serve` puts what a modality sends on the reading worklist: storescu stores a
series, the worker's arrival scan gives the study its row (``arrived``, within
NOCTIS_WORKFLOW_SCAN_SECONDS), and once the study is stable it is ``ready``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from support import dcmtk, wait
from support.dicomdata import generate_ct_series
from support.logs import ServerLogs
from support.serve import EmbeddedServe


def _state(index: Path) -> str | None:
    with sqlite3.connect(index) as db:
        row = db.execute("SELECT state FROM study_workflow").fetchone()
    return row[0] if row else None


def test_a_stored_study_arrives_on_the_worklist_then_is_ready_when_stable(
    tmp_path: Path, server_logs: ServerLogs
) -> None:
    settings = {
        "NOCTIS_WORKFLOW_SCAN_SECONDS": "0.2",
        "NOCTIS_STABLE_AFTER_SECONDS": "3",
        "NOCTIS_STABLE_SWEEP_SECONDS": "0.5",
    }
    with EmbeddedServe(tmp_path, server_logs, settings) as serve:
        series = generate_ct_series(tmp_path / "ct", slices=4, size=32)
        assert dcmtk.storescu(serve.port, series, calling="CT1", called="NOCTIS").ok
        index = serve.data_dir / "index.sqlite3"
        seen = wait.until(
            lambda: _state(index), what="the study's worklist row", timeout=20, interval=0.05
        )
        assert seen == "arrived"  # before the 3 s quiet time is over
        wait.until(lambda: _state(index) == "ready", what="the study ready once stable", timeout=30)
