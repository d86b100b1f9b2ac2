"""`noctis serve` puts what a modality sends on the reading worklist: storescu stores a
series, the worker's arrival scan gives the study its row (``arrived``, within
NOCTIS_WORKFLOW_SCAN_SECONDS), and once the study is stable it is ``ready``."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from support import dcmtk, terminate, wait, wait_started
from support.dicomdata import generate_ct_series
from support.logs import ServerLogs
from support.ports import LOOPBACK, free_ports


def _state(index: Path) -> str | None:
    with sqlite3.connect(index) as db:
        row = db.execute("SELECT state FROM study_workflow").fetchone()
    return row[0] if row else None


def test_a_stored_study_arrives_on_the_worklist_then_is_ready_when_stable(
    tmp_path: Path, server_logs: ServerLogs
) -> None:
    port, health_port, api_port = free_ports(3)
    data = tmp_path / "data"
    data.mkdir()
    env = {
        **os.environ,
        "NOCTIS_MODE": "embedded",
        "NOCTIS_DATA_DIR": str(data),
        "NOCTIS_SCP_HOST": LOOPBACK,
        "NOCTIS_SCP_PORT": str(port),
        "NOCTIS_HEALTH_HOST": LOOPBACK,
        "NOCTIS_HEALTH_PORT": str(health_port),
        "NOCTIS_API_HOST": LOOPBACK,
        "NOCTIS_API_PORT": str(api_port),
        "NOCTIS_ADMIN_PASSWORD": "a-long-enough-password",
        "NOCTIS_VIEWER_DIR": str(tmp_path / "no-viewer"),
        "NOCTIS_WORKFLOW_SCAN_SECONDS": "0.2",
        "NOCTIS_STABLE_AFTER_SECONDS": "3",
        "NOCTIS_STABLE_SWEEP_SECONDS": "0.5",
    }
    log = tmp_path / "serve.log"
    server_logs.watch("noctis serve", log)
    with log.open("ab") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "noctis.cli", "serve"], env=env, stdout=out, stderr=out
        )
    try:
        wait_started(
            lambda: "listening on" in log.read_text(errors="replace"),
            what="noctis serve",
            process=serve,
            log=log,
            timeout=60,
        )
        series = generate_ct_series(tmp_path / "ct", slices=4, size=32)
        assert dcmtk.storescu(port, series, calling="CT1", called="NOCTIS").ok
        index = data / "index.sqlite3"
        seen = wait.until(
            lambda: _state(index), what="the study's worklist row", timeout=20, interval=0.05
        )
        assert seen == "arrived"  # before the 3 s quiet time is over
        wait.until(lambda: _state(index) == "ready", what="the study ready once stable", timeout=30)
    finally:
        terminate(serve, timeout=30)
