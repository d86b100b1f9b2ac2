"""`up`, `down` and `status` of the one-node cluster: what ``scripts/cluster`` and the tests run.

`up` is idempotent: a running cluster is kept (its images refreshed, the chart upgraded); a
half-dead one (a supervisor that died) is taken down first. `down` removes everything `up` made,
whether the supervisor still runs or not.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import log_tail, wait
from support.cluster import chart, host, images
from support.cluster import layout as L
from support.cluster.components import admin_client
from support.cluster.layout import ClusterBinaries, Layout
from support.kube import REPO_ROOT, ControlPlane, TestbedError

SUPERVISOR_START_TIMEOUT = 300.0
NODE_READY_TIMEOUT = 120.0
Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"cluster: {message}", file=sys.stderr, flush=True)


@dataclass
class Cluster:
    """A running cluster and an admin client for it (kubectl, helm, API calls)."""

    layout: Layout
    binaries: ClusterBinaries
    admin: ControlPlane
    images: dict[str, str] = field(default_factory=dict)  # name -> ref (pause, hello, noctis-*)
    timings: dict[str, float] = field(default_factory=dict)
    dicom: str | None = None  # host:port of the quickstart DicomNode's LoadBalancer
    web: str | None = None  # URL of the quickstart Archive's API Service

    @property
    def kubeconfig(self) -> Path:
        return self.layout.admin_kubeconfig

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.admin.kubectl(*args, **kwargs)

    def kubectl_json(self, *args: str) -> Any:
        return self.admin.kubectl_json(*args)

    def helm(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.admin.helm(*args, **kwargs)

    def log(self, component: str, lines: int = 40) -> str:
        return log_tail(self.layout.log(component), lines)


# ---------------------------------------------------------------------------------------------
# Locking and processes


@contextlib.contextmanager
def _locked(layout: Layout) -> Iterator[None]:
    """One `up` or `down` at a time on this machine."""
    lock_path = layout.root.parent / f".{layout.root.name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _pid_from(path: Path) -> int | None:
    """The pid in ``path`` if that process is alive (not a zombie)."""
    try:
        pid = int(path.read_text().strip())
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError):
        return None
    return None if state in ("Z", "X") else pid


def _wait_gone(pid: int, timeout: float) -> bool:
    """True once the process is gone (or a zombie), False if it is still there after `timeout`."""
    try:
        wait.until(
            lambda: _is_gone(pid), timeout=timeout, what=f"process {pid} to end", interval=0.1
        )
    except wait.WaitTimeout:
        return False
    return True


def _is_gone(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # our own child (the tests' session) must be reaped
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def _supervisor_status(layout: Layout) -> dict[str, Any]:
    try:
        return dict(json.loads(layout.supervisor_status.read_text()))
    except (OSError, ValueError):
        return {}


def is_running(layout: Layout | None = None) -> bool:
    layout = layout or Layout.default()
    return (
        _pid_from(layout.supervisor_pid) is not None
        and _supervisor_status(layout).get("phase") == "running"
    )


def _require_root() -> None:
    if os.geteuid() != 0:
        raise TestbedError("the one-node cluster needs root (network interfaces, iptables, mounts)")


# ---------------------------------------------------------------------------------------------
# Up


def up(layout: Layout | None = None, *, install_noctis: bool = True, log: Log = _stderr) -> Cluster:
    """Build or reuse everything, start the cluster (or keep the running one), wait for the node,
    install (or upgrade) Noctis with the chart's quickstart."""
    _require_root()
    layout = layout or Layout.default()
    began = time.monotonic()
    timings: dict[str, float] = {}
    with _locked(layout):
        running = is_running(layout)
        if not running and (_pid_from(layout.supervisor_pid) or layout.root.exists()):
            log("a previous cluster is not running as it should: taking it down first")
            _down(layout, log)
        binaries = _ensure_binaries(log)
        timings["binaries"] = time.monotonic() - began
        refs = {
            "pause": images.build_static_image("pause"),
            "hello": images.build_static_image("hello"),
        }
        refs.update(images.build_noctis_images())
        images.stage_archives(layout, list(refs.values()))
        timings["images"] = time.monotonic() - began - timings["binaries"]
        host.prepare(layout)
        if running:
            log("the cluster is running: keeping it")
            imported = images.import_archives(layout)
            if imported:
                log(f"imported into the node: {', '.join(imported)}")
        else:
            started = time.monotonic()
            _start_supervisor(layout, refs["pause"], log)
            timings["components"] = time.monotonic() - started
        cluster = Cluster(layout, binaries, admin_client(layout, binaries), refs, timings)
        node_wait = time.monotonic()
        _wait_node_ready(cluster)
        timings["node_ready"] = time.monotonic() - node_wait
        if install_noctis and "scp" in refs:
            log("installing Noctis (helm, quickstart) ...")
            installed = chart.install(cluster, chart.admin_password_from_environment())
            timings.update({f"chart_{key}": value for key, value in installed.items()})
            log(f"Noctis Ready {installed['pods_ready']:.1f} s after `helm upgrade --install`")
        elif install_noctis:
            log("no Noctis images (scripts/build-images.sh is missing): chart not installed")
        timings["total"] = time.monotonic() - began
        log(f"node {L.NODE_NAME} Ready; up in {timings['total']:.1f} s")
        return cluster


def _ensure_binaries(log: Log) -> ClusterBinaries:
    try:
        return ClusterBinaries.from_cache()
    except TestbedError:
        log("building the test bed's binaries (scripts/build-testbed.sh) ...")
        subprocess.run(
            [str(REPO_ROOT / "scripts" / "build-testbed.sh")], check=True, stdout=sys.stderr
        )
        return ClusterBinaries.from_cache()


def _start_supervisor(layout: Layout, pause_image: str, log: Log) -> None:
    layout.logs.mkdir(parents=True, exist_ok=True)
    layout.run.mkdir(parents=True, exist_ok=True)
    layout.supervisor_status.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT / "tests")])
    env["PATH"] = os.pathsep.join([env.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    with layout.log("supervisor").open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "support.cluster.supervisor", str(layout.root), pause_image],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=layout.root,  # stray relative writes land in the state, never in the repo
            start_new_session=True,
        )
    log(f"supervisor started (pid {process.pid}); components log to {layout.logs}")
    reported = ""

    def settled() -> bool:
        nonlocal reported
        status = _supervisor_status(layout)
        if status.get("starting") and status["starting"] != reported:
            reported = status["starting"]
            log(f"starting {reported} ...")
        if process.poll() is not None and status.get("phase") != "failed":
            raise TestbedError(
                f"the cluster's supervisor exited ({process.returncode}):\n"
                + log_tail(layout.log("supervisor"))
            )
        return status.get("phase") in ("running", "failed", "stopped")

    wait.until(
        settled,
        timeout=SUPERVISOR_START_TIMEOUT,
        what="the cluster's components to start",
        interval=0.2,
    )
    status = _supervisor_status(layout)
    if status.get("phase") != "running":
        _wait_gone(process.pid, 60)
        raise TestbedError(f"the cluster did not start: {status.get('error')}")


def _wait_node_ready(cluster: Cluster) -> None:
    def ready() -> bool:
        result = cluster.kubectl("get", "node", L.NODE_NAME, "-o", "json", check=False)
        if result.returncode != 0:
            return False
        node = json.loads(result.stdout)
        conditions = node["status"].get("conditions", [])
        # The pod CIDR too: the controller manager gives it a moment after the node registers.
        return node["spec"].get("podCIDR") == L.NODE_POD_CIDR and any(
            c["type"] == "Ready" and c["status"] == "True" for c in conditions
        )

    wait.until(
        ready,
        timeout=NODE_READY_TIMEOUT,
        what=f"node {L.NODE_NAME} to be Ready",
        interval=0.5,
        context=lambda: f"kubelet's log:\n{cluster.log('kubelet')}",
    )


# ---------------------------------------------------------------------------------------------
# Down


def down(
    layout: Layout | None = None, *, purge: bool = False, log: Log = _stderr
) -> dict[str, Any]:
    """Stop everything `up` started and remove its state and its changes to the machine;
    ``purge`` removes the node's image store too (kept otherwise: importing takes minutes)."""
    _require_root()
    layout = layout or Layout.default()
    with _locked(layout):
        report = _down(layout, log)
        if purge and layout.image_store.exists():
            shutil.rmtree(layout.image_store)
            log(f"removed the node's image store {layout.image_store}")
        return report


def _down(layout: Layout, log: Log) -> dict[str, Any]:
    began = time.monotonic()
    report: dict[str, Any] = {}
    supervisor = _pid_from(layout.supervisor_pid)
    if supervisor:
        _remove_pods(layout, log)
        os.kill(supervisor, signal.SIGTERM)
        if not _wait_gone(supervisor, 90):
            log("the supervisor did not stop within 90 s: killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(supervisor, signal.SIGKILL)
            _wait_gone(supervisor, 10)
    report["processes_killed"] = _kill_leftovers(layout)
    report["shims_killed"] = host.kill_shims(layout)
    report["pod_processes_killed"] = host.kill_cgroup_processes()
    report["mounts"] = host.remove_mounts(layout)
    report["cgroups"] = len(host.remove_cgroups())
    report["iptables_chains"] = host.remove_iptables_chains()
    report["links"] = host.remove_links()
    host.remove_cni_cache()
    report["sysctls_kept"] = host.restore_sysctls(layout)
    for kept in report["sysctls_kept"]:
        log(f"sysctl kept: {kept}")
    if layout.root.exists():
        shutil.rmtree(layout.root, ignore_errors=True)
    report["seconds"] = round(time.monotonic() - began, 1)
    report["leftovers"] = host.leftovers(layout)
    for leftover in report["leftovers"]:
        log(f"left behind: {leftover}")
    log(
        f"down in {report['seconds']} s: {len(report['mounts'])} mounts, "
        f"{report['cgroups']} cgroups, {len(report['iptables_chains'])} iptables chains, "
        f"links {report['links']} removed"
    )
    return report


def _remove_pods(layout: Layout, log: Log) -> None:
    """Kubelet first (so nothing restarts them), then every pod through the CRI: CNI releases
    their addresses, chains and namespaces as it would on a real node."""
    kubelet = _pid_from(layout.run / "kubelet.pid")
    if kubelet:
        os.kill(kubelet, signal.SIGTERM)
        _wait_gone(kubelet, 30)
    try:
        binaries = ClusterBinaries.from_cache()
    except TestbedError:
        return
    config = layout.config / "crictl.yaml"
    if config.exists():
        result = subprocess.run(
            [str(binaries.crictl), "--config", str(config), "rmp", "--all", "--force"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            log(f"crictl rmp: {result.stderr.strip()}")


def _kill_leftovers(layout: Layout) -> list[str]:
    killed = []
    for pidfile in layout.run.glob("*.pid") if layout.run.exists() else []:
        pid = _pid_from(pidfile)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            _wait_gone(pid, 10)
            killed.append(pidfile.stem)
    return killed


# ---------------------------------------------------------------------------------------------
# Status


def status(layout: Layout | None = None) -> dict[str, Any]:
    layout = layout or Layout.default()
    supervisor = _pid_from(layout.supervisor_pid)
    report: dict[str, Any] = {
        "state_dir": str(layout.root),
        "supervisor": supervisor,
        **_supervisor_status(layout),
    }
    if not supervisor:
        report["phase"] = "down" if not layout.root.exists() else "dead (run `down`)"
        return report
    report["memory_mib"] = memory_mib(report)
    with contextlib.suppress(TestbedError, OSError, subprocess.SubprocessError):
        cluster = Cluster(
            layout, ClusterBinaries.from_cache(), admin_client(layout, ClusterBinaries.from_cache())
        )
        report["nodes"] = cluster.kubectl("get", "nodes", "-o", "wide").stdout
        report["pods"] = cluster.kubectl("get", "pods", "-A", "-o", "wide").stdout
        report["loadbalancers"] = cluster.kubectl(
            "get", "services", "-A", "--field-selector", "spec.type=LoadBalancer"
        ).stdout
    return report


def assignments(cluster: Cluster) -> list[str]:
    """The shell assignments `scripts/cluster up` ends with."""
    lines = [f"KUBECONFIG={cluster.kubeconfig}"]
    if cluster.dicom:
        lines.append(f"NOCTIS_DICOM={cluster.dicom}")
    if cluster.web:
        lines.append(f"NOCTIS_WEB={cluster.web}")
    return lines


def describe(report: dict[str, Any]) -> str:
    """`scripts/cluster status` for a person."""
    lines = [f"cluster: {report.get('phase', 'unknown')} (state in {report['state_dir']})"]
    if report.get("error"):
        lines.append(f"error: {report['error']}")
    for name, component in (report.get("components") or {}).items():
        state = "running" if component["running"] else f"exited ({component['exit_code']})"
        lines.append(f"  {name:<24} pid {component['pid']:<8} {state}")
    memory = report.get("memory_mib") or {}
    if memory:
        lines.append("memory (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in memory.items()))
    for key in ("nodes", "pods", "loadbalancers"):
        if report.get(key):
            lines += ["", report[key].rstrip()]
    return "\n".join(lines)


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def memory_mib(report: dict[str, Any]) -> dict[str, float]:
    """Resident memory of each component, their sum, the shims, and what the pods use."""
    memory = {
        name: round(_rss_mib(component["pid"]), 1)
        for name, component in (report.get("components") or {}).items()
        if component.get("running")
    }
    if report.get("supervisor"):
        memory["supervisor"] = round(_rss_mib(report["supervisor"]), 1)
    memory["control plane and node"] = round(sum(memory.values()), 1)
    shims = host.processes_matching(["-address", str(Layout.default().containerd_socket)])
    memory["containerd shims"] = round(sum(_rss_mib(pid) for pid in shims), 1)
    with contextlib.suppress(OSError, ValueError):
        usage = Path("/sys/fs/cgroup/memory/kubepods/memory.usage_in_bytes").read_text()
        memory["pods (kubepods cgroup)"] = round(int(usage) / 2**20, 1)
    return memory
