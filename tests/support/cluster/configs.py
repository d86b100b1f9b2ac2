"""The cluster's configuration files, built as dicts and written once per `up`.

Each function returns what it wrote (a path), so that the components read exactly these files.
FIELD-NOTES ("A one-node cluster with a real kubelet") says why each non-default setting is there.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import yaml

from support.cluster import layout as L
from support.cluster.layout import Layout
from support.kube import kubeconfig_yaml, write_token_file

# Token users -> their groups. The scheduler, controller manager, kube-proxy and node users are
# the names Kubernetes' default RBAC (and the Node authorizer) grant their permissions to.
TOKEN_USERS: dict[str, tuple[str, ...]] = {
    "admin": ("system:masters",),
    f"system:node:{L.NODE_NAME}": ("system:nodes",),
    "system:kube-scheduler": (),
    "system:kube-controller-manager": (),
    "system:kube-proxy": (),
    "testbed:coredns": (),
    "testbed:loadbalancer-allocator": (),
    "testbed:metrics-server": (),
}


def ensure_tokens(layout: Layout) -> dict[str, str]:
    """A token per user, made once (kept across `up`s so kubeconfigs stay valid)."""
    saved = layout.pki / "tokens.json"
    tokens: dict[str, str] = json.loads(saved.read_text()) if saved.exists() else {}
    for user in TOKEN_USERS:
        tokens.setdefault(user, secrets.token_urlsafe(32))
    layout.pki.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(tokens, indent=2))
    saved.chmod(0o600)
    write_token_file(
        layout.tokens, [(tokens[user], user, groups) for user, groups in TOKEN_USERS.items()]
    )
    return tokens


def write_kubeconfigs(layout: Layout, tokens: dict[str, str], ca_file: Path) -> None:
    """One kubeconfig per token user; the admin's also at ``layout.admin_kubeconfig``."""
    layout.config.mkdir(parents=True, exist_ok=True)
    for user, token in tokens.items():
        path = layout.kubeconfig(user.replace(":", "-"))
        path.write_text(kubeconfig_yaml(layout.api_url, ca_file, token, user))
        path.chmod(0o600)
    layout.admin_kubeconfig.write_text(
        kubeconfig_yaml(layout.api_url, ca_file, tokens["admin"], "admin")
    )
    layout.admin_kubeconfig.chmod(0o600)


def user_kubeconfig(layout: Layout, user: str) -> Path:
    return layout.kubeconfig(user.replace(":", "-"))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string is a JSON string


def _toml(tables: dict[str, dict[str, Any]], top: dict[str, Any]) -> str:
    """A TOML document of plain key/values and tables (all containerd's config needs)."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in top.items()]
    for table, values in tables.items():
        lines += ["", f"[{table}]"]
        lines += [f"  {key} = {_toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def write_containerd_config(layout: Layout, pause_image: str) -> Path:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    runc = f"{cri}.containerd.runtimes.runc"
    text = _toml(
        top={
            "version": 2,
            "root": str(layout.containerd_root),
            "state": str(layout.containerd_state),
            "disabled_plugins": [
                "io.containerd.snapshotter.v1.aufs",
                "io.containerd.snapshotter.v1.btrfs",
                "io.containerd.snapshotter.v1.devmapper",
                "io.containerd.snapshotter.v1.zfs",
                "io.containerd.tracing.processor.v1.otlp",
            ],
        },
        tables={
            "grpc": {"address": str(layout.containerd_socket)},
            "ttrpc": {"address": f"{layout.containerd_socket}.ttrpc"},
            "debug": {"address": "", "level": "warn"},
            "metrics": {"address": ""},
            'plugins."io.containerd.internal.v1.opt"': {"path": str(layout.root / "opt")},
            cri: {
                "sandbox_image": pause_image,
                # These machines drop CAP_SYS_RESOURCE even for root: a sandbox's oom_score_adj
                # of -998 would make runc fail ("can't get final child's PID from pipe: EOF").
                "restrict_oom_score_adj": True,
                "enable_selinux": False,
                "disable_apparmor": True,
            },
            f"{cri}.containerd": {"snapshotter": "overlayfs", "default_runtime_name": "runc"},
            runc: {"runtime_type": "io.containerd.runc.v2"},
            f"{runc}.options": {
                "BinaryName": "/usr/sbin/runc",
                "Root": str(layout.runc_root),
                "SystemdCgroup": False,
            },
            f"{cri}.cni": {
                "bin_dir": "/usr/lib/cni",
                "conf_dir": str(layout.cni_conf_dir),
                "max_conf_num": 1,
            },
        },
    )
    path = layout.config / "containerd.toml"
    path.write_text(text)
    return path


def write_cni_config(layout: Layout) -> Path:
    """bridge (gateway, masquerade, hairpin) + host-local + portmap; containerd adds loopback."""
    config = {
        "cniVersion": "1.0.0",
        "name": L.CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": L.BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(layout.cni_ipam_dir),
                    "ranges": [[{"subnet": L.NODE_POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    layout.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    path = layout.cni_conf_dir / "10-noctis.conflist"
    path.write_text(json.dumps(config, indent=2))
    return path


def write_kubelet_config(layout: Layout, ca_file: Path) -> Path:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": L.NODE_IP,
        "port": L.KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": L.KUBELET_HEALTHZ_PORT,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        # containerd 1.6 cannot report its cgroup driver; this machine has cgroups v1.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "clusterDNS": [L.NODE_IP],
        "clusterDomain": L.CLUSTER_DOMAIN,
        # Pods get no upstream resolver: names outside the cluster are not looked up anywhere.
        "resolvConf": "",
        "podCIDR": L.NODE_POD_CIDR,
        "podLogsDir": str(layout.pod_logs),
        "staticPodPath": "",
        # The images were loaded, not pulled: never collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "protectKernelDefaults": False,
        "shutdownGracePeriod": "0s",
        "logging": {"verbosity": 1},
    }
    path = layout.config / "kubelet.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_kube_proxy_config(layout: Layout, kubeconfig: Path) -> Path:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": L.NODE_NAME,
        "bindAddress": L.NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{L.KUBE_PROXY_HEALTHZ_PORT}",
        "metricsBindAddress": f"127.0.0.1:{L.KUBE_PROXY_METRICS_PORT}",
        "mode": "iptables",
        "clusterCIDR": L.POD_CIDR,
        # NodePorts on the node's address only, never on the machine's own.
        "nodePortAddresses": [f"{L.NODE_IP}/32"],
        # It may not set conntrack sysctls here; leave the host's values alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"minSyncPeriod": "1s", "syncPeriod": "30s"},
    }
    path = layout.config / "kube-proxy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_corefile(layout: Layout, kubeconfig: Path) -> Path:
    """Cluster names only: nothing is forwarded to a resolver outside the machine."""
    text = f"""\
.:53 {{
    bind {L.NODE_IP}
    errors
    ready 127.0.0.1:{L.COREDNS_READY_PORT}
    kubernetes {L.CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        ttl 5
    }}
    cache 5
    loop
}}
"""
    path = layout.config / "Corefile"
    path.write_text(text)
    return path


def write_crictl_config(layout: Layout) -> Path:
    path = layout.config / "crictl.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "runtime-endpoint": f"unix://{layout.containerd_socket}",
                "image-endpoint": f"unix://{layout.containerd_socket}",
                "timeout": 30,
            }
        )
    )
    return path
