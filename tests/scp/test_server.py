"""``noctis scp`` as a process: health and metrics endpoints, SIGTERM draining, several
processes on one port (one listening socket), and the ``noctis echo`` / ``noctis upload`` commands.

Embedded settings (the loopback "default" facility accepts any calling AE title), a temp data
directory and free loopback ports.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from scp_support import scp_environment
from sqlalchemy import func, select

from noctis.index.models import Instance
from noctis.scp import status
from noctis.scp.client import store_files
from support import dcmtk, log_tail, terminate, wait, wait_started
from support.archive import embedded_settings, index_counts, open_runtime
from support.dicomdata import generate_ct_series
from support.logs import ServerLogs
from support.ports import LOOPBACK, free_ports, is_listening

pytestmark = pytest.mark.dcmtk

STARTUP_TIMEOUT = 60.0


@dataclass
class ScpProcess:
    process: subprocess.Popen[bytes]
    port: int
    health_port: int
    log: Path
    data_dir: Path

    def get(self, path: str) -> tuple[int, bytes]:
        url = f"http://{LOOPBACK}:{self.health_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, b""

    def metrics(self) -> str:
        code, body = self.get("/metrics")
        assert code == 200
        return body.decode()


def noctis(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "noctis.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def scp_process(
    request: pytest.FixtureRequest, tmp_path: Path, server_logs: ServerLogs
) -> Iterator[ScpProcess]:
    processes = getattr(request, "param", 1)
    port, health_port = free_ports(2)
    log = tmp_path / "scp.log"
    server_logs.watch("noctis scp", log)
    env = scp_environment(tmp_path / "data", port, health_port, processes)
    running = ScpProcess(noctis("scp", env=env, log=log), port, health_port, log, tmp_path / "data")
    try:
        wait_started(
            lambda: running.get("/readyz")[0] == 200,
            what="noctis scp",
            process=running.process,
            log=log,
            timeout=STARTUP_TIMEOUT,
        )
        yield running
    finally:
        terminate(running.process, timeout=30)


def test_health_metrics_and_draining_on_sigterm(scp_process: ScpProcess) -> None:
    assert scp_process.get("/healthz") == (200, b"ok\n")
    code, body = scp_process.get("/readyz")
    assert code == 200 and json.loads(body) == {"index": "ok", "objects": "ok"}
    assert scp_process.get("/nothing")[0] == 404

    assert dcmtk.echoscu(scp_process.port, calling="ANYONE", called="NOCTIS").ok
    metrics = scp_process.metrics()
    assert "noctis_scp_associations_total 1.0" in metrics
    assert 'noctis_scp_requests_total{result="success",service="echo"} 1.0' in metrics
    assert "noctis_scp_store_seconds_bucket" in metrics

    ae = AE(ae_title="DRAINING")
    ae.add_requested_context(Verification)
    assoc = ae.associate(LOOPBACK, scp_process.port, ae_title="NOCTIS")
    assert assoc.is_established
    scp_process.process.send_signal(signal.SIGTERM)
    wait.until(  # stops accepting at once...
        lambda: not is_listening(scp_process.port),
        timeout=10,
        what="the SCP to stop accepting after SIGTERM",
    )
    answer = assoc.send_c_echo()  # ...while the open association goes on
    assert answer.Status == status.SUCCESS
    assert scp_process.process.poll() is None
    assoc.release()
    assert scp_process.process.wait(timeout=10) == 0, log_tail(scp_process.log)


@pytest.mark.parametrize("scp_process", [2], indirect=True)
def test_processes_share_one_port(scp_process: ScpProcess) -> None:
    code, body = scp_process.get("/readyz")
    assert code == 200 and json.loads(body)["scp-processes"] == "ok"
    for index in range(16):
        ae = AE(ae_title=f"CALLER{index}")
        ae.add_requested_context(Verification)
        assoc = ae.associate(LOOPBACK, scp_process.port, ae_title="NOCTIS")
        assert assoc.is_established
        assert assoc.send_c_echo().Status == status.SUCCESS
        assoc.release()
    metrics = scp_process.metrics()
    # The parent adds up its children's samples; the per-process gauge keeps a pid label.
    assert "noctis_scp_associations_total 16.0" in metrics
    per_process = {
        pid: float(value)
        for pid, value in re.findall(
            r'noctis_scp_process_associations\{pid="(\d+)"\} ([0-9.]+)', metrics
        )
    }
    assert len(per_process) == 2, metrics
    assert sum(per_process.values()) == 16
    assert all(count > 0 for count in per_process.values()), per_process  # both took some

    scp_process.process.send_signal(signal.SIGTERM)
    assert scp_process.process.wait(timeout=40) == 0, log_tail(scp_process.log)
    assert not is_listening(scp_process.port)


def metric(metrics: str, sample: str) -> float:
    """The value of one sample line (name and labels exactly as exposed), 0 if absent."""
    found = re.search(rf"^{re.escape(sample)} ([0-9.e+]+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("scp_process", [2], indirect=True)
def test_one_scrape_adds_up_what_both_processes_stored(
    scp_process: ScpProcess, tmp_path: Path
) -> None:
    """Two SCP processes store over a dozen associations; `/metrics` of the one health
    server counts every instance, byte and store latency of both (multiprocess mode)."""
    files = generate_ct_series(tmp_path / "ct", slices=24, size=32)
    for batch in range(12):  # one association each: the two processes take turns
        report = store_files(LOOPBACK, scp_process.port, files[batch * 2 : batch * 2 + 2])
        assert report.succeeded == 2, report.failures
    metrics = scp_process.metrics()

    per_process = {
        pid: float(value)
        for pid, value in re.findall(
            r'noctis_scp_process_associations\{pid="(\d+)"\} ([0-9.]+)', metrics
        )
    }
    assert len(per_process) == 2 and all(per_process.values()), per_process  # both stored
    assert metric(metrics, 'noctis_scp_instances_stored_total{outcome="stored"}') == 24
    assert metric(metrics, 'noctis_scp_requests_total{result="success",service="store"}') == 24
    assert metric(metrics, "noctis_scp_store_seconds_count") == 24
    assert metric(metrics, 'noctis_scp_store_seconds_bucket{le="+Inf"}') == 24
    runtime = open_runtime(embedded_settings(scp_process.data_dir))
    try:
        with runtime.sessions() as session:
            stored = session.scalar(select(func.sum(Instance.size_bytes)))
    finally:
        runtime.close()
    assert metric(metrics, "noctis_scp_stored_bytes_total") == stored


def test_echo_and_upload_commands(scp_process: ScpProcess, tmp_path: Path) -> None:
    port = str(scp_process.port)
    env = {**os.environ}
    echo = subprocess.run(
        [sys.executable, "-m", "noctis.cli", "echo", LOOPBACK, port],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert echo.returncode == 0 and "0x0000" in echo.stderr, echo.stderr
    generate_ct_series(tmp_path / "upload", slices=5, size=32)
    (tmp_path / "upload" / "notes.txt").write_text("not DICOM")
    upload = subprocess.run(
        [sys.executable, "-m", "noctis.cli", "upload", str(tmp_path / "upload"), "--port", port],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert upload.returncode == 1, upload.stderr  # the text file is reported, not sent
    assert "sent 5 of 6 files; 1 failed" in " ".join(upload.stderr.split())
    assert "notes.txt" in upload.stderr
    runtime = open_runtime(embedded_settings(scp_process.data_dir))
    try:
        assert index_counts(runtime)["instance"] == 5
    finally:
        runtime.close()


def associations_per_process(root: int, port: int) -> list[int]:
    """Connections accepted on ``port`` by each process of the tree under ``root`` that holds
    any."""
    tree = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    held = [
        sum(
            1
            for c in member.net_connections(kind="tcp")
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
        )
        for member in tree
    ]
    return [count for count in held if count]


def test_noctis_serve_runs_several_scp_processes(tmp_path: Path, server_logs: ServerLogs) -> None:
    """`noctis serve` with NOCTIS_SCP_PROCESSES=2: both processes accept on the one port, what
    either stores is in the one index, and SIGTERM stops them all."""
    port, health_port, api_port = free_ports(3)
    env = {
        **scp_environment(tmp_path / "data", port, health_port, processes=2),
        "NOCTIS_API_HOST": LOOPBACK,
        "NOCTIS_API_PORT": str(api_port),
        "NOCTIS_ADMIN_PASSWORD": "a-long-enough-password",
        "NOCTIS_VIEWER_DIR": str(tmp_path / "no-viewer"),
    }
    log = tmp_path / "serve.log"
    server_logs.watch("noctis serve", log)
    process = noctis("serve", env=env, log=log)
    try:
        wait_started(
            lambda: log.read_text(errors="replace").count("listening on") >= 2,
            what="noctis serve",
            process=process,
            log=log,
            timeout=STARTUP_TIMEOUT,
        )
        assert "2 SCP processes on the port" in log.read_text()  # it says so
        # Associations held open one after another: the two processes take turns, each
        # ends up with half (without the shared board: whichever woke first took each one).
        held = []
        for index in range(8):
            ae = AE(ae_title=f"CALLER{index}")
            ae.add_requested_context(Verification)
            assoc = ae.associate(LOOPBACK, port, ae_title="NOCTIS")
            assert assoc.is_established
            assert assoc.send_c_echo().Status == status.SUCCESS
            held.append(assoc)
        assert sorted(associations_per_process(process.pid, port)) == [4, 4]
        for assoc in held:
            assoc.release()
        files = generate_ct_series(tmp_path / "ct", slices=8, size=32)
        senders = [
            subprocess.Popen(
                [sys.executable, "-m", "noctis.cli", "upload", str(path), "--port", str(port)],
                env={**os.environ},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for path in files
        ]
        assert [sender.wait(timeout=120) for sender in senders] == [0] * len(files)
        # SIGTERM: no new associations, while an open one goes on, then a clean exit.
        ae = AE(ae_title="DRAINING")
        ae.add_requested_context(Verification)
        assoc = ae.associate(LOOPBACK, port, ae_title="NOCTIS")
        assert assoc.is_established
        process.send_signal(signal.SIGTERM)
        wait.until(
            lambda: not is_listening(port),
            timeout=20,
            what="noctis serve to stop accepting after SIGTERM",
        )
        assert assoc.send_c_echo().Status == status.SUCCESS
        assoc.release()
        assert process.wait(timeout=60) == 0, log_tail(log)
    finally:
        terminate(process, timeout=30)
    runtime = open_runtime(embedded_settings(tmp_path / "data"))
    try:
        assert index_counts(runtime)["instance"] == len(files)
    finally:
        runtime.close()
