"""`python bench/run.py cluster`: the one-node cluster's figures (needs root, no cluster running).

- `scripts/cluster up` without Noctis: the control plane and node from nothing to a Ready node
  (binaries and images cached; the node's image store warm or not, as it is);
- time from `helm upgrade --install` (the quickstart) to the first C-STORE the SCP accepts
  through its LoadBalancer (dcmtk storescu of one CT slice, tried every half second), and to
  every Noctis pod Ready;
- resident memory of the control plane and node, of the containerd shims, and of the pods;
- C-STORE throughput of a 300-slice CT through the LoadBalancer (one storescu association);
- `scripts/cluster down`;
- the same CT sent the same way to the same SCP run as a plain process (`noctis scp` with
  PostgreSQL and SeaweedFS, like the quickstart's pods: the store benchmark's
  noctis-production target), after the cluster is down.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.noctis import NoctisTarget
from bench.procs import LOOPBACK, load_average, test_support
from bench.target import CALLING_AE


def _support() -> tuple[Any, Any, Any]:
    """support.cluster lives with the tests (test-bed tooling, not the noctis package)."""
    test_support()
    from support.cluster import chart, cluster
    from support.dicomdata import generate_ct_series

    return cluster, chart, generate_ct_series


def _storescu(address: str, files: list[Path]) -> subprocess.CompletedProcess[str]:
    host, port = address.rsplit(":", 1)
    return subprocess.run(
        ["/usr/bin/storescu", "-aet", CALLING_AE, "-aec", "NOCTIS", host, port, *map(str, files)],
        capture_output=True,
        text=True,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
        timeout=600,
    )


def _scp_address(cluster: Any, chart: Any) -> str | None:
    found = cluster.kubectl(
        "get", "service", "-n", chart.NAMESPACE, "noctis-scp", "-o", "json", check=False
    )
    if found.returncode != 0:
        return None
    service = json.loads(found.stdout)
    ingress = service["status"].get("loadBalancer", {}).get("ingress") or []
    return f"{ingress[0]['ip']}:{service['spec']['ports'][0]['port']}" if ingress else None


def measure(console: Console) -> dict[str, Any]:
    control, chart, generate_ct_series = _support()
    if control.is_running():
        raise SystemExit(
            "a cluster is running: `scripts/cluster down` first (the bench starts one)"
        )
    figures: dict[str, Any] = {}
    began = time.monotonic()
    running = control.up(install_noctis=False, log=lambda m: console.print(f"[dim]{m}[/dim]"))
    figures["up_without_noctis_s"] = round(time.monotonic() - began, 1)
    figures["up_timings_s"] = {k: round(v, 1) for k, v in running.timings.items()}
    figures["memory_idle_mib"] = control.memory_mib(control.status())
    with tempfile.TemporaryDirectory(prefix="noctis-bench-cluster-") as tmp:
        ct = generate_ct_series(Path(tmp) / "ct", slices=300)
        _through_the_cluster(control, chart, running, ct, figures)
        began = time.monotonic()
        control.down(log=lambda m: console.print(f"[dim]{m}[/dim]"))
        figures["down_s"] = round(time.monotonic() - began, 1)
        figures["ct_300_plain_process"] = _plain_process(ct, Path(tmp) / "plain")
    return figures


def _through_the_cluster(
    control: Any, chart: Any, running: Any, ct: list[Path], figures: dict[str, Any]
) -> None:
    installed: dict[str, Any] = {}

    def install() -> None:
        try:
            installed.update(chart.install(running, None))
        except Exception as error:  # reported below
            installed["error"] = str(error)

    helm_start = time.monotonic()
    installer = threading.Thread(target=install)
    installer.start()
    first_store = None
    while first_store is None and time.monotonic() - helm_start < chart.INSTALL_TIMEOUT:
        address = _scp_address(running, chart)
        if address and _storescu(address, ct[:1]).returncode == 0:
            first_store = time.monotonic() - helm_start
            break
        time.sleep(0.5)
    installer.join()
    if "error" in installed:
        raise SystemExit(f"helm install failed: {installed['error']}")
    figures["helm_to_first_c_store_s"] = round(first_store, 1) if first_store else None
    figures["helm_to_all_pods_ready_s"] = round(installed["pods_ready"], 1)
    figures["memory_with_noctis_mib"] = control.memory_mib(control.status())
    assert running.dicom is not None
    started = time.monotonic()
    sent = _storescu(running.dicom, ct)
    seconds = time.monotonic() - started
    figures["ct_300_through_loadbalancer"] = _rate(sent, seconds, len(ct))


def _plain_process(ct: list[Path], root: Path) -> dict[str, Any]:
    """The CT over one association to `noctis scp` as a process on this machine."""
    root.mkdir()
    target = NoctisTarget(root, production=True)
    try:
        target.start()
        started = time.monotonic()
        sent = _storescu(f"{LOOPBACK}:{target.dicom_port}", ct)
        return _rate(sent, time.monotonic() - started, len(ct))
    finally:
        target.stop()


def _rate(sent: subprocess.CompletedProcess[str], seconds: float, count: int) -> dict[str, Any]:
    return {
        "ok": sent.returncode == 0,
        "seconds": round(seconds, 2),
        "instances_per_s": round(count / seconds, 1),
    }


def report(figures: dict[str, Any], console: Console) -> None:
    table = Table(title="One-node cluster (scripts/cluster)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("up, node Ready (no Noctis)", f"{figures['up_without_noctis_s']} s")
    table.add_row(
        "helm install -> first accepted C-STORE", f"{figures['helm_to_first_c_store_s']} s"
    )
    table.add_row(
        "helm install -> every Noctis pod Ready", f"{figures['helm_to_all_pods_ready_s']} s"
    )
    for label, key in (("idle", "memory_idle_mib"), ("with Noctis", "memory_with_noctis_mib")):
        memory = figures[key]
        table.add_row(
            f"memory {label}: control plane and node", f"{memory['control plane and node']:.0f} MiB"
        )
        if "pods (kubepods cgroup)" in memory:
            table.add_row(f"memory {label}: pods", f"{memory['pods (kubepods cgroup)']:.0f} MiB")
    store = figures["ct_300_through_loadbalancer"]
    table.add_row("CT 300 x 512x512 via LoadBalancer", f"{store['instances_per_s']} inst/s")
    plain = figures["ct_300_plain_process"]
    table.add_row("the same CT, SCP as a plain process", f"{plain['instances_per_s']} inst/s")
    table.add_row("down", f"{figures['down_s']} s")
    console.print(table)


def main(console: Console, results_dir: Path) -> int:
    load_before = list(load_average())
    figures = measure(console)
    report(figures, console)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-cluster.json"
    document = {
        "suite": "cluster",
        "load_before": load_before,
        "load_after": list(load_average()),
        **figures,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"results: {path}")
    return 0
