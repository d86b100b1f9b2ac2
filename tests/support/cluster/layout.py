"""Where the one-node cluster lives: its addresses, ports and files.

One cluster per machine: the kubelet's port, the NodePort range, a bridge and iptables chains are
machine-wide, so the addresses and ports are fixed and the state lives in one directory
(``NOCTIS_CLUSTER_DIR``, default ``/var/lib/noctis-cluster``).

Traffic stays on this machine: the node's address is on a dummy interface made for it (not the
machine's own address, and dropped when it arrives from anywhere but loopback or the pods' bridge),
pods live in network namespaces on a bridge of their own, and LoadBalancer addresses come from
127.0.0.0/8.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from support.kube import require_built, testbed_cache, testbed_versions

NODE_NAME = "noctis-node"
NODE_INTERFACE = "noctis0"  # dummy interface holding the node's address
NODE_IP = "10.245.0.1"
BRIDGE = "noctisbr0"
CNI_NETWORK = "noctis-pods"
POD_CIDR = "10.244.0.0/16"
NODE_POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
CLUSTER_DOMAIN = "cluster.local"
# LoadBalancer addresses, like a cloud's pool: loopback only (see the module docstring).
LOADBALANCER_POOL = ipaddress.ip_network("127.240.0.0/24")

ETCD_CLIENT_PORT = 12379
ETCD_PEER_PORT = 12380
APISERVER_PORT = 6443
KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248
KUBE_PROXY_HEALTHZ_PORT = 10256
KUBE_PROXY_METRICS_PORT = 10249
SCHEDULER_PORT = 10259
CONTROLLER_MANAGER_PORT = 10257
COREDNS_READY_PORT = 18181
METRICS_SERVER_PORT = 4443
GUARD_CHAIN = "NOCTIS-NODE-GUARD"  # drops traffic to the node's address from other interfaces


@dataclass(frozen=True)
class ClusterBinaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubelet: Path
    kube_proxy: Path
    kubectl: Path
    helm: Path
    coredns: Path
    crictl: Path
    metrics_server: Path

    @classmethod
    def from_cache(cls) -> ClusterBinaries:
        """The test bed's binaries; a clear error naming the build script if any is missing."""
        versions = testbed_versions()
        cache = testbed_cache()

        def built(name: str, version_key: str, binary: str | None = None) -> Path:
            return cache / f"{name}-{versions[version_key]}" / "bin" / (binary or name)

        def kube(binary: str) -> Path:
            return built("kubernetes", "KUBERNETES_VERSION", binary)

        binaries = cls(
            etcd=built("etcd", "ETCD_VERSION"),
            kube_apiserver=kube("kube-apiserver"),
            kube_controller_manager=kube("kube-controller-manager"),
            kube_scheduler=kube("kube-scheduler"),
            kubelet=kube("kubelet"),
            kube_proxy=kube("kube-proxy"),
            kubectl=kube("kubectl"),
            helm=built("helm", "HELM_VERSION"),
            coredns=built("coredns", "COREDNS_VERSION"),
            crictl=built("crictl", "CRICTL_VERSION"),
            metrics_server=built("metrics-server", "METRICS_SERVER_VERSION"),
        )
        require_built(binaries, "cluster binaries", cache)
        return binaries


@dataclass(frozen=True)
class Layout:
    """Every path of the cluster's state, under one directory that `down` removes."""

    root: Path

    @classmethod
    def default(cls) -> Layout:
        return cls(Path(os.environ.get("NOCTIS_CLUSTER_DIR") or "/var/lib/noctis-cluster"))

    # directories
    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def run(self) -> Path:
        """Pid files, the supervisor's state and sockets."""
        return self.root / "run"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def image_store(self) -> Path:
        """The node's image store (containerd's root), kept across `down` like a node's image
        cache: importing the Noctis images again takes minutes. `down --purge` removes it."""
        return testbed_cache() / "node-image-store"

    @property
    def containerd_root(self) -> Path:
        return self.image_store / "containerd"

    @property
    def imported_record(self) -> Path:
        """Which archive each image in the image store came from."""
        return self.image_store / "imported.json"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def runc_root(self) -> Path:
        return self.root / "containerd" / "runc"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "networks"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def config(self) -> Path:
        return self.root / "config"

    # files
    @property
    def containerd_socket(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def tokens(self) -> Path:
        return self.pki / "tokens.csv"

    @property
    def saved_sysctls(self) -> Path:
        """The host's sysctl values before the first `up`, set back by `down`."""
        return self.root / "sysctls.json"

    @property
    def supervisor_pid(self) -> Path:
        return self.run / "supervisor.pid"

    @property
    def supervisor_status(self) -> Path:
        return self.run / "supervisor.json"

    def kubeconfig(self, user: str) -> Path:
        return self.config / f"kubeconfig-{user}"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    @property
    def api_url(self) -> str:
        return f"https://{NODE_IP}:{APISERVER_PORT}"
