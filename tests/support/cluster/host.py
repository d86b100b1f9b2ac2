"""What the cluster changes on the machine itself, and how `down` puts it all back.

`prepare` saves the sysctls it and the components change, sets the few the node needs, makes the
dummy interface holding the node's address and a guard that drops traffic to that address from
anywhere but loopback and the pods' bridge. The `remove_*` functions undo what the components
leave behind when they stop (or are killed): iptables chains, mounts, network namespaces,
cgroups, links. Each is safe to run when there is nothing to remove.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from support.cluster import layout as L
from support.cluster.layout import Layout
from support.kube import TestbedError

# Set by `prepare` (the node needs them) or by the kubelet and kube-proxy as they start.
SYSCTLS_CHANGED = (
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.netfilter.nf_conntrack_max",
)
SYSCTLS_SET = {
    # Pods' traffic is routed through the host.
    "net.ipv4.ip_forward": "1",
    # A connection from this machine to a LoadBalancer address (127.240.x.y) is DNAT'd to a pod:
    # its loopback source may leave `lo` only with this (then it is masqueraded).
    "net.ipv4.conf.all.route_localnet": "1",
    # Pod-to-Service traffic on the same bridge must go through kube-proxy's iptables rules.
    "net.bridge.bridge-nf-call-iptables": "1",
}
IPTABLES_TABLES = ("filter", "nat", "mangle", "raw")
CNI_RESULTS_DIR = Path("/var/lib/cni/results")
NETNS_DIR = Path("/run/netns")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def run(*argv: str, check: bool = True, input: str | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, input=input)
    if check and result.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed ({result.returncode}): {result.stderr}")
    return result.stdout


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctl(name: str) -> str | None:
    try:
        return _sysctl_path(name).read_text().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    with contextlib.suppress(OSError):
        _sysctl_path(name).write_text(value)


# ---------------------------------------------------------------------------------------------
# Up


def prepare(layout: Layout) -> None:
    """Sysctls saved (once) and set, the node's dummy interface and its guard."""
    if not layout.saved_sysctls.exists():
        saved = {name: read_sysctl(name) for name in SYSCTLS_CHANGED}
        layout.saved_sysctls.write_text(json.dumps(saved, indent=2))
    if not Path("/proc/sys/net/bridge").is_dir():
        raise TestbedError("the kernel's br_netfilter is not loaded: run `modprobe br_netfilter`")
    for name, value in SYSCTLS_SET.items():
        write_sysctl(name, value)
    _ensure_node_interface()
    _ensure_guard()


def _ensure_node_interface() -> None:
    """A dummy interface, or a bridge without ports where the kernel has no dummy driver (as on
    these machines): either holds a local address that nothing outside the machine reaches."""
    if not Path(f"/sys/class/net/{L.NODE_INTERFACE}").exists():
        made = subprocess.run(
            ["ip", "link", "add", L.NODE_INTERFACE, "type", "dummy"], capture_output=True
        )
        if made.returncode != 0:
            run("ip", "link", "add", L.NODE_INTERFACE, "type", "bridge")
        write_sysctl(f"net.ipv6.conf.{L.NODE_INTERFACE}.disable_ipv6", "1")
    addresses = run("ip", "-o", "-4", "addr", "show", "dev", L.NODE_INTERFACE)
    if f" {L.NODE_IP}/" not in addresses:
        run("ip", "addr", "add", f"{L.NODE_IP}/32", "dev", L.NODE_INTERFACE)
    run("ip", "link", "set", L.NODE_INTERFACE, "up")


def _ensure_guard() -> None:
    """Only this machine (loopback) and its pods (the bridge) may reach the node's address."""
    if run("iptables", "-n", "-L", L.GUARD_CHAIN, check=False).strip():
        return
    run("iptables", "-N", L.GUARD_CHAIN)
    run("iptables", "-A", L.GUARD_CHAIN, "-i", "lo", "-j", "RETURN")
    run("iptables", "-A", L.GUARD_CHAIN, "-i", L.BRIDGE, "-j", "RETURN")
    run("iptables", "-A", L.GUARD_CHAIN, "-j", "DROP")
    run("iptables", "-I", "INPUT", "-d", f"{L.NODE_IP}/32", "-j", L.GUARD_CHAIN)


# ---------------------------------------------------------------------------------------------
# Down


def restore_sysctls(layout: Layout) -> list[str]:
    """Set back what `up` found; what was kept (and why) is returned."""
    if not layout.saved_sysctls.exists():
        return []
    kept = []
    others = _other_container_bridges()
    for name, value in json.loads(layout.saved_sysctls.read_text()).items():
        if value is None or read_sysctl(name) == value:
            continue
        if name == "net.ipv4.ip_forward" and value == "0" and others:
            # Another container network (e.g. podman building an image) forwards right now:
            # turning forwarding off would cut it off. Its own plugin turned it on as well.
            kept.append(f"{name}=1 (in use by {', '.join(others)})")
            continue
        write_sysctl(name, value)
    layout.saved_sysctls.unlink()
    return kept


def _other_container_bridges() -> list[str]:
    """Bridges other than ours with interfaces attached (other containers' networks)."""
    found = []
    for ports in Path("/sys/class/net").glob("*/brif"):
        bridge = ports.parent.name
        if bridge not in (L.BRIDGE, L.NODE_INTERFACE) and any(ports.iterdir()):
            found.append(bridge)
    return sorted(found)


def remove_iptables_chains() -> list[str]:
    """Every KUBE-* chain, the guard, and the CNI-* chains of our pod network, with the jumps
    to them (IPv4 and IPv6). Returns what went, as ``table:chain``."""
    removed = []
    for save, restore in (
        ("iptables-save", "iptables-restore"),
        ("ip6tables-save", "ip6tables-restore"),
    ):
        for table in IPTABLES_TABLES:
            dump = run(save, "-t", table, check=False)
            script, chains = _chain_removal(table, dump)
            if chains:
                run(restore, "--noflush", input=script)
                removed += [f"{table}:{chain}" for chain in chains]
    return removed


def _chain_removal(table: str, dump: str) -> tuple[str, list[str]]:
    """An iptables-restore script removing our chains from one table's iptables-save dump."""
    chains = [line[1:].split()[0] for line in dump.splitlines() if line.startswith(":")]
    rules = [line for line in dump.splitlines() if line.startswith("-A ")]

    def target(rule: str) -> str | None:
        words = shlex.split(rule)
        for flag in ("-j", "-g"):
            if flag in words[:-1]:
                return words[words.index(flag) + 1]
        return None

    def ours_by_comment(rule: str) -> bool:
        # CNI's plugins comment each rule `name: "<network>" id: "<container>"`.
        return f'name: "{L.CNI_NETWORK}"' in " ".join(shlex.split(rule))

    ours = {c for c in chains if c.startswith("KUBE-") or c == L.GUARD_CHAIN}
    for rule in rules:
        chain, jump = rule.split()[1], target(rule)
        if (
            ours_by_comment(rule)
            and chain.startswith("CNI-")
            and not chain.startswith("CNI-HOSTPORT")
        ):
            ours.add(chain)
        if (
            ours_by_comment(rule)
            and jump
            and jump.startswith("CNI-")
            and not jump.startswith("CNI-HOSTPORT")
        ):
            ours.add(jump)
    # portmap's shared chains go when nothing but our chains is left in them.
    for chain in chains:
        if chain.startswith("CNI-HOSTPORT"):
            inside = [r for r in rules if r.split()[1] == chain]
            if all(target(r) in ours or ours_by_comment(r) for r in inside):
                ours.add(chain)
    if not ours:
        return "", []
    lines = [f"*{table}"]
    for rule in rules:
        chain = rule.split()[1]
        if chain not in ours and (target(rule) in ours or (ours_by_comment(rule))):
            lines.append("-D" + rule[2:])
    lines += [f"-F {chain}" for chain in sorted(ours)]
    lines += [f"-X {chain}" for chain in sorted(ours)]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n", sorted(ours)


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        points.append(point)
    return points


def _ours(point: str, layout: Layout) -> bool:
    """A mount point under the state directory or the image store (the sandboxes' shm)."""
    return any(
        point == str(top) or point.startswith(f"{top}/")
        for top in (layout.root, layout.containerd_root)
    )


def remove_mounts(layout: Layout) -> list[str]:
    """Unmount (deepest first) everything under our directories and our pods' netns."""
    removed = []
    for _ in range(5):  # a mount can hide another at the same point
        points = [
            p for p in _mount_points() if _ours(p, layout) or p.startswith(f"{NETNS_DIR}/cni-")
        ]
        if not points:
            break
        for point in sorted(set(points), key=len, reverse=True):
            if subprocess.run(["umount", "--lazy", point], capture_output=True).returncode == 0:
                removed.append(point)
    for netns in NETNS_DIR.glob("cni-*"):
        with contextlib.suppress(OSError):
            netns.unlink()
    return sorted(set(removed))


def _cgroup_dirs(name: str) -> list[Path]:
    if not CGROUP_ROOT.is_dir():
        return []
    found = [h / name for h in CGROUP_ROOT.iterdir() if (h / name).is_dir()]
    if (CGROUP_ROOT / name / "cgroup.procs").exists():
        found.append(CGROUP_ROOT / name)
    return found


def kill_cgroup_processes(name: str = "kubepods") -> int:
    """SIGKILL every process left in the pods' cgroups; how many there were."""
    pids: set[int] = set()
    for top in _cgroup_dirs(name):
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def remove_cgroups(name: str = "kubepods") -> list[str]:
    removed = []
    for top in _cgroup_dirs(name):
        for attempt in range(20):
            leftover = []
            for directory, _subdirs, _files in os.walk(top, topdown=False):
                try:
                    os.rmdir(directory)
                    removed.append(directory)
                except OSError:
                    leftover.append(directory)
            if not leftover:
                break
            kill_cgroup_processes(name)
            time.sleep(0.1 * (attempt + 1))
    return removed


def processes_matching(words: Iterable[str]) -> list[int]:
    """Pids whose command line holds every one of ``words`` (exact arguments)."""
    wanted = set(words)
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = set((proc / "cmdline").read_bytes().decode(errors="replace").split("\0"))
        except OSError:
            continue
        if wanted <= argv:
            pids.append(int(proc.name))
    return pids


def kill_shims(layout: Layout) -> list[int]:
    """containerd's runc shims of our containerd (they outlive it by design)."""
    pids = processes_matching(["-address", str(layout.containerd_socket)])
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def remove_links() -> list[str]:
    """The pods' veths left on our bridge, the bridge, the node's dummy interface."""
    removed = []
    bridge_ports = Path(f"/sys/class/net/{L.BRIDGE}/brif")
    if bridge_ports.is_dir():
        for port in bridge_ports.iterdir():
            run("ip", "link", "del", port.name, check=False)
            removed.append(port.name)
    for link in (L.BRIDGE, L.NODE_INTERFACE):
        if Path(f"/sys/class/net/{link}").exists():
            run("ip", "link", "del", link, check=False)
            removed.append(link)
    return removed


def remove_cni_cache() -> None:
    for result in CNI_RESULTS_DIR.glob(f"{L.CNI_NETWORK}-*"):
        with contextlib.suppress(OSError):
            result.unlink()


def leftovers(layout: Layout) -> list[str]:
    """Whatever of the cluster is still on the machine (empty after a thorough `down`)."""
    found = [
        f"process {pid}"
        for top in (layout.root, layout.containerd_root)
        for pid in processes_containing(str(top))
    ]
    for save in ("iptables-save", "ip6tables-save"):
        for table in IPTABLES_TABLES:
            _script, chains = _chain_removal(table, run(save, "-t", table, check=False))
            found += [f"{save.removesuffix('-save')} {table} chain {chain}" for chain in chains]
    found += [f"mount {p}" for p in _mount_points() if _ours(p, layout)]
    found += [f"cgroup {d}" for d in _cgroup_dirs("kubepods")]
    found += [
        f"link {n}" for n in (L.BRIDGE, L.NODE_INTERFACE) if Path(f"/sys/class/net/{n}").exists()
    ]
    if layout.root.exists():
        found.append(f"directory {layout.root}")
    return found


def processes_containing(text: str) -> list[int]:
    """Pids whose command line mentions ``text`` (e.g. the state directory)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
            pids.append(int(proc.name))
    return pids
