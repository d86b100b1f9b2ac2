"""Kubernetes objects the test bed's own components need: RBAC for CoreDNS, the LoadBalancer
allocator and metrics-server (which Kubernetes has no default roles for), and metrics-server's
registration with the aggregation layer (it runs on the node's address, outside any pod)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from support.cluster import layout as L

RBAC = "rbac.authorization.k8s.io"


def _cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": rules,
    }


def _binding(kind: str, name: str, role_kind: str, role: str, user: str, **meta: str) -> dict:
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": kind,
        "metadata": {"name": name, **meta},
        "roleRef": {"apiGroup": RBAC, "kind": role_kind, "name": role},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": user}],
    }


def rbac() -> list[dict[str, Any]]:
    coredns, allocator, metrics = (
        "testbed:coredns",
        "testbed:loadbalancer-allocator",
        "testbed:metrics-server",
    )
    return [
        _cluster_role(
            coredns,
            [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        ),
        _cluster_role(
            allocator,
            [
                {"apiGroups": [""], "resources": ["services"], "verbs": ["list", "watch", "get"]},
                {
                    "apiGroups": [""],
                    "resources": ["services/status"],
                    "verbs": ["patch", "update"],
                },
            ],
        ),
        # metrics-server's own role, as its release manifests grant it.
        _cluster_role(
            metrics,
            [
                {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                {
                    "apiGroups": [""],
                    "resources": ["pods", "nodes"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        ),
        _binding("ClusterRoleBinding", coredns, "ClusterRole", coredns, coredns),
        _binding("ClusterRoleBinding", allocator, "ClusterRole", allocator, allocator),
        _binding("ClusterRoleBinding", metrics, "ClusterRole", metrics, metrics),
        # Delegated authentication and authorization of the requests the apiserver proxies.
        _binding(
            "ClusterRoleBinding",
            f"{metrics}:auth-delegator",
            "ClusterRole",
            "system:auth-delegator",
            metrics,
        ),
        _binding(
            "RoleBinding",
            f"{metrics}:auth-reader",
            "Role",
            "extension-apiserver-authentication-reader",
            metrics,
            namespace="kube-system",
        ),
    ]


def metrics_api(ca_file: Path) -> list[dict[str, Any]]:
    """metrics.k8s.io served by metrics-server on the node's address: a Service without a
    selector, its Endpoints, and the APIService (verified against the cluster's CA)."""
    meta = {"name": "metrics-server", "namespace": "kube-system"}
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                "ports": [{"name": "https", "port": 443, "targetPort": L.METRICS_SERVER_PORT}]
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": meta,
            "subsets": [
                {
                    "addresses": [{"ip": L.NODE_IP}],
                    "ports": [{"name": "https", "port": L.METRICS_SERVER_PORT}],
                }
            ],
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
                "service": {"name": "metrics-server", "namespace": "kube-system", "port": 443},
                "caBundle": base64.b64encode(ca_file.read_bytes()).decode(),
            },
        },
    ]
