"""`noctis serve` routes too: a per-instance route declared with `noctis route apply` sends
what a modality stores (storescu) on to dcmtk's storescp, matching on the calling AE and the
modality; a route matching another calling AE sends nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from routing_support import received_uids

from support import dcmtk, terminate, wait, wait_started
from support.dicomdata import generate_ct_series, sop_instance_uid
from support.logs import ServerLogs
from support.ports import LOOPBACK, free_ports

STARTUP_TIMEOUT = 60.0


def _noctis(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "noctis.cli", *args], env=env, stdout=out, stderr=out
        )


def _run(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "noctis.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_noctis_serve_forwards_each_instance_of_a_matching_sender(
    tmp_path: Path, server_logs: ServerLogs
) -> None:
    port, health_port, api_port = free_ports(3)
    env = {
        **os.environ,
        "NOCTIS_MODE": "embedded",
        "NOCTIS_DATA_DIR": str(tmp_path / "data"),
        "NOCTIS_SCP_HOST": LOOPBACK,
        "NOCTIS_SCP_PORT": str(port),
        "NOCTIS_HEALTH_HOST": LOOPBACK,
        "NOCTIS_HEALTH_PORT": str(health_port),
        "NOCTIS_API_HOST": LOOPBACK,
        "NOCTIS_API_PORT": str(api_port),
        "NOCTIS_ADMIN_PASSWORD": "a-long-enough-password",
        "NOCTIS_VIEWER_DIR": str(tmp_path / "no-viewer"),
        "NOCTIS_ROUTE_SCAN_SECONDS": "0.3",
    }
    (tmp_path / "data").mkdir()
    with dcmtk.StoreSCP(tmp_path / "received", ae_title="DEST") as destination:
        declared = tmp_path / "declared.yaml"
        declared.write_text(
            yaml.safe_dump_all(
                [
                    {
                        "apiVersion": "pacs.noctis.io/v1alpha1",
                        "kind": "Facility",
                        "metadata": {"name": "east"},
                        "spec": {
                            "applicationEntities": [
                                {"aeTitle": "CT1", "allowedCIDRs": ["127.0.0.0/8"]},
                                {"aeTitle": "CT2", "allowedCIDRs": ["127.0.0.0/8"]},
                                {"aeTitle": "DEST", "host": LOOPBACK, "port": destination.port},
                            ]
                        },
                    }
                ]
            )
        )
        routes = tmp_path / "routes.yaml"
        routes.write_text(
            yaml.safe_dump_all(
                [
                    _route("ct1-to-dest", callingAETitles=["CT1"], modalities=["CT"]),
                    _route("mr-to-dest", callingAETitles=["CT*"], modalities=["MR"]),
                ]
            )
        )
        _run("migrate", env=env)
        _run("facility", "apply", "-f", str(declared), env=env)
        assert "route ct1-to-dest" in _run("route", "apply", "-f", str(routes), env=env)
        log = tmp_path / "serve.log"
        server_logs.watch("noctis serve", log)
        serve = _noctis("serve", env=env, log=log)
        try:
            wait_started(
                lambda: "listening on" in log.read_text(errors="replace"),
                what="noctis serve",
                process=serve,
                log=log,
                timeout=STARTUP_TIMEOUT,
            )
            routed = generate_ct_series(tmp_path / "routed", slices=6, size=32)
            ignored = generate_ct_series(tmp_path / "ignored", slices=4, size=32, seed=1)
            assert dcmtk.storescu(port, routed, calling="CT1", called="NOCTIS").ok
            assert dcmtk.storescu(port, ignored, calling="CT2", called="NOCTIS").ok
            expected = {sop_instance_uid(path) for path in routed}

            def received() -> set[str]:
                return set(received_uids(destination))  # by name: a file may be half written

            wait.until(lambda: received() == expected, what="the CT1 series at DEST", timeout=60)
            listing = _run("route", "list", "--json", env=env)
        finally:
            terminate(serve, timeout=30)
    assert received() == expected  # CT2's series never went
    reports = {report["name"]: report for report in yaml.safe_load(listing)}
    assert reports["ct1-to-dest"]["totals"] == {
        "pending": 0,
        "sent": len(expected),
        "failed": 0,
        "dead": 0,
    }
    assert reports["mr-to-dest"]["totals"]["sent"] == 0


def _route(name: str, **match: list[str]) -> dict[str, object]:
    return {
        "apiVersion": "pacs.noctis.io/v1alpha1",
        "kind": "Route",
        "metadata": {"name": name},
        "spec": {
            "facility": "east",
            "trigger": "instance",
            "match": match,
            "destinations": ["DEST"],
        },
    }
