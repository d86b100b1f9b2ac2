"""The cluster's processes: what each one runs with, and how to tell it is ready.

In start order: containerd, etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
kubelet, kube-proxy, CoreDNS, the LoadBalancer allocator. ``support.cluster.supervisor`` starts
them; ``ClusterFiles.write`` makes every file they read first.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from support.cluster import configs
from support.cluster import layout as L
from support.cluster.layout import ClusterBinaries, Layout
from support.cluster.pki import CertificateFiles, ensure_ca, ensure_certificate
from support.kube import (
    REPO_ROOT,
    ControlPlane,
    TestbedBinaries,
    apiserver_common_flags,
    etcd_command,
    etcd_healthy,
    write_service_account_keys,
)


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    argv: list[str]
    ready: Callable[[], bool]
    timeout: float = 60.0
    env: dict[str, str] | None = None


@dataclass
class ClusterFiles:
    """Paths of the certificates, keys and configs the components are started with."""

    ca: CertificateFiles
    apiserver: CertificateFiles
    kubelet_client: CertificateFiles
    front_proxy_ca: CertificateFiles
    front_proxy_client: CertificateFiles
    metrics_server: CertificateFiles
    sa_key: Path
    sa_pub: Path
    tokens: dict[str, str] = field(repr=False)
    containerd: Path
    kubelet: Path
    kube_proxy: Path
    corefile: Path

    @classmethod
    def write(cls, layout: Layout, pause_image: str) -> ClusterFiles:
        """Certificates and tokens made once (kept across `up`s); configs rewritten each time."""
        for directory in (layout.pki, layout.config, layout.logs, layout.run):
            directory.mkdir(parents=True, exist_ok=True)
        ca = ensure_ca(layout.pki, "ca")
        front_proxy_ca = ensure_ca(layout.pki, "front-proxy-ca")
        sa_key, sa_pub = layout.pki / "sa.key", layout.pki / "sa.pub"
        if not (sa_key.exists() and sa_pub.exists()):
            sa_key, sa_pub = write_service_account_keys(layout.pki)
        tokens = configs.ensure_tokens(layout)
        configs.write_kubeconfigs(layout, tokens, ca.cert)
        configs.write_cni_config(layout)
        configs.write_crictl_config(layout)
        return cls(
            ca=ca,
            apiserver=ensure_certificate(
                ca,
                layout.pki,
                "apiserver",
                "kube-apiserver",
                server_names=(
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    f"kubernetes.default.svc.{L.CLUSTER_DOMAIN}",
                    "localhost",
                ),
                server_ips=(L.NODE_IP, L.KUBERNETES_SERVICE_IP, "127.0.0.1"),
            ),
            kubelet_client=ensure_certificate(
                ca,
                layout.pki,
                "apiserver-kubelet-client",
                "kube-apiserver-kubelet-client",
                organizations=("system:masters",),
            ),
            front_proxy_ca=front_proxy_ca,
            front_proxy_client=ensure_certificate(
                front_proxy_ca, layout.pki, "front-proxy-client", "front-proxy-client"
            ),
            metrics_server=ensure_certificate(
                ca,
                layout.pki,
                "metrics-server",
                "metrics-server",
                server_names=("metrics-server.kube-system.svc",),
                server_ips=(L.NODE_IP,),
            ),
            sa_key=sa_key,
            sa_pub=sa_pub,
            tokens=tokens,
            containerd=configs.write_containerd_config(layout, pause_image),
            kubelet=configs.write_kubelet_config(layout, ca.cert),
            kube_proxy=configs.write_kube_proxy_config(
                layout, configs.user_kubeconfig(layout, "system:kube-proxy")
            ),
            corefile=configs.write_corefile(
                layout, configs.user_kubeconfig(layout, "testbed:coredns")
            ),
        )


def admin_client(layout: Layout, binaries: ClusterBinaries) -> ControlPlane:
    """kubectl, helm and API calls as the cluster's admin (support.kube's client, reused)."""
    tokens = configs.ensure_tokens(layout)
    return ControlPlane(
        binaries=TestbedBinaries(
            etcd=binaries.etcd,
            kube_apiserver=binaries.kube_apiserver,
            kube_controller_manager=binaries.kube_controller_manager,
            kubectl=binaries.kubectl,
            helm=binaries.helm,
        ),
        workdir=layout.root / "client",
        api_url=layout.api_url,
        ca_file=layout.pki / "ca.crt",
        admin_token=tokens["admin"],
        kubeconfig=layout.admin_kubeconfig,
    )


def _unix_socket_accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        sock.connect(str(path))
    return True


def _https_ok(url: str) -> bool:
    """A component's own /healthz behind its self-signed certificate (no auth on that path)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        return bool(response.status == 200)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bool(response.status == 200)


def component_specs(
    layout: Layout, binaries: ClusterBinaries, files: ClusterFiles
) -> list[ComponentSpec]:
    admin = admin_client(layout, binaries)

    def kubeconfig(user: str) -> str:
        return str(configs.user_kubeconfig(layout, user))

    def delegated_auth(user: str) -> list[str]:
        return [
            f"--kubeconfig={kubeconfig(user)}",
            f"--authentication-kubeconfig={kubeconfig(user)}",
            f"--authorization-kubeconfig={kubeconfig(user)}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
        ]

    pythonpath = os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT / "tests")])
    return [
        ComponentSpec(
            "containerd",
            ["containerd", "--config", str(files.containerd)],
            lambda: _unix_socket_accepts(layout.containerd_socket),
            timeout=30,
        ),
        ComponentSpec(
            "etcd",
            etcd_command(binaries.etcd, layout.etcd_data, L.ETCD_CLIENT_PORT, L.ETCD_PEER_PORT),
            lambda: etcd_healthy(L.ETCD_CLIENT_PORT),
            timeout=30,
        ),
        ComponentSpec(
            "kube-apiserver",
            [
                str(binaries.kube_apiserver),
                *apiserver_common_flags(
                    L.ETCD_CLIENT_PORT, L.APISERVER_PORT, layout.tokens, files.sa_key, files.sa_pub
                ),
                f"--bind-address={L.NODE_IP}",
                f"--advertise-address={L.NODE_IP}",
                f"--tls-cert-file={files.apiserver.cert}",
                f"--tls-private-key-file={files.apiserver.key}",
                f"--client-ca-file={files.ca.cert}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--service-cluster-ip-range={L.SERVICE_CIDR}",
                f"--kubelet-client-certificate={files.kubelet_client.cert}",
                f"--kubelet-client-key={files.kubelet_client.key}",
                "--kubelet-preferred-address-types=InternalIP",
                # The aggregation layer (metrics-server's metrics.k8s.io).
                f"--requestheader-client-ca-file={files.front_proxy_ca.cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={files.front_proxy_client.cert}",
                f"--proxy-client-key-file={files.front_proxy_client.key}",
                "--enable-aggregator-routing=true",
                "--profiling=false",
            ],
            lambda: admin.api_get("/readyz")[0] == 200,
            timeout=90,
        ),
        ComponentSpec(
            "kube-controller-manager",
            [
                str(binaries.kube_controller_manager),
                *delegated_auth("system:kube-controller-manager"),
                f"--secure-port={L.CONTROLLER_MANAGER_PORT}",
                "--controllers=*",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={files.sa_key}",
                f"--root-ca-file={files.ca.cert}",
                "--allocate-node-cidrs=true",
                f"--cluster-cidr={L.POD_CIDR}",
                "--node-cidr-mask-size=24",
                f"--service-cluster-ip-range={L.SERVICE_CIDR}",
                "--profiling=false",
            ],
            lambda: _https_ok(f"https://127.0.0.1:{L.CONTROLLER_MANAGER_PORT}/healthz"),
        ),
        ComponentSpec(
            "kube-scheduler",
            [
                str(binaries.kube_scheduler),
                *delegated_auth("system:kube-scheduler"),
                f"--secure-port={L.SCHEDULER_PORT}",
                "--profiling=false",
            ],
            lambda: _https_ok(f"https://127.0.0.1:{L.SCHEDULER_PORT}/healthz"),
        ),
        ComponentSpec(
            "kubelet",
            [
                str(binaries.kubelet),
                f"--config={files.kubelet}",
                f"--kubeconfig={kubeconfig(f'system:node:{L.NODE_NAME}')}",
                f"--root-dir={layout.kubelet_root}",
                f"--cert-dir={layout.kubelet_root / 'pki'}",
                f"--node-ip={L.NODE_IP}",
                f"--hostname-override={L.NODE_NAME}",
            ],
            lambda: _http_ok(f"http://127.0.0.1:{L.KUBELET_HEALTHZ_PORT}/healthz"),
            timeout=90,
        ),
        ComponentSpec(
            "kube-proxy",
            [str(binaries.kube_proxy), f"--config={files.kube_proxy}"],
            lambda: _http_ok(f"http://127.0.0.1:{L.KUBE_PROXY_HEALTHZ_PORT}/healthz"),
        ),
        ComponentSpec(
            "coredns",
            [str(binaries.coredns), "-conf", str(files.corefile)],
            lambda: _http_ok(f"http://127.0.0.1:{L.COREDNS_READY_PORT}/ready"),
        ),
        ComponentSpec(
            "metrics-server",
            [
                str(binaries.metrics_server),
                f"--bind-address={L.NODE_IP}",
                f"--secure-port={L.METRICS_SERVER_PORT}",
                f"--tls-cert-file={files.metrics_server.cert}",
                f"--tls-private-key-file={files.metrics_server.key}",
                f"--kubeconfig={kubeconfig('testbed:metrics-server')}",
                f"--authentication-kubeconfig={kubeconfig('testbed:metrics-server')}",
                f"--authorization-kubeconfig={kubeconfig('testbed:metrics-server')}",
                # The kubelet's serving certificate is self-signed (no TLS bootstrap here).
                "--kubelet-insecure-tls",
                "--kubelet-preferred-address-types=InternalIP",
                "--kubelet-use-node-status-port",
                "--metric-resolution=15s",
            ],
            lambda: _https_ok(f"https://{L.NODE_IP}:{L.METRICS_SERVER_PORT}/livez"),
        ),
        ComponentSpec(
            "loadbalancer",
            [
                sys.executable,
                "-m",
                "support.cluster.loadbalancer",
                "--kubeconfig",
                kubeconfig("testbed:loadbalancer-allocator"),
            ],
            lambda: True,
            env={**os.environ, "PYTHONPATH": pythonpath},
        ),
    ]
