"""Objects of a DicomNode: ConfigMap, SCP Deployment, Service, HPA, PodDisruptionBudget."""

from __future__ import annotations

from typing import Any

from noctis.operator.builders import common
from noctis.operator.builders.archive import ArchiveContext, Images
from noctis.specs.dicomnode import DicomNodeSpec
from noctis.specs.kube import ServiceType

KIND = "DicomNode"
COMPONENT = "scp"
HEALTH_PORT = 8081
TLS_DIR = "/etc/noctis/tls"
# After the pod leaves the Service's endpoints, new associations stop arriving; then SIGTERM
# tells the SCP to stop listening and finish the open ones within terminationGracePeriodSeconds.
PRE_STOP_SECONDS = 10


def scp_name(node: str) -> str:
    return f"{node}-{COMPONENT}"


def node_config(spec: DicomNodeSpec) -> dict[str, str]:
    """The SCP's own settings (NOCTIS_*), in its ConfigMap."""
    config = {
        "NOCTIS_AE_TITLE": spec.ae_title,
        "NOCTIS_SCP_HOST": "0.0.0.0",
        "NOCTIS_SCP_PORT": str(spec.port),
        "NOCTIS_HEALTH_HOST": "0.0.0.0",
        "NOCTIS_HEALTH_PORT": str(HEALTH_PORT),
        "NOCTIS_MAX_ASSOCIATIONS": str(spec.max_associations),
        "NOCTIS_SPOOL_DIR": f"{common.DATA_DIR}/spool",
        "NOCTIS_SCP_DRAIN_SECONDS": str(max(spec.drain_seconds - PRE_STOP_SECONDS - 5, 1)),
    }
    if spec.service.hides_client_addresses:
        # Every outside caller arrives from a node's address: a per-address cap would count
        # a whole node (all the modalities behind it) as one client.
        config["NOCTIS_MAX_CONNECTIONS_PER_ADDRESS"] = "0"
    if spec.facilities:
        config["NOCTIS_SCP_FACILITIES"] = ",".join(spec.facilities)
    if spec.tls is not None:
        config["NOCTIS_TLS_CERT_FILE"] = f"{TLS_DIR}/tls.crt"
        config["NOCTIS_TLS_KEY_FILE"] = f"{TLS_DIR}/tls.key"
        if spec.tls.require_client_certificate:
            config["NOCTIS_TLS_CA_FILE"] = f"{TLS_DIR}/ca.crt"
    return config


def _labels(node: str) -> dict[str, str]:
    return common.labels(COMPONENT, node, KIND)


def build_config_map(node: str, namespace: str, spec: DicomNodeSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": common.metadata(scp_name(node), namespace, _labels(node)),
        "data": node_config(spec),
    }


def build_deployment(
    node: str, namespace: str, spec: DicomNodeSpec, archive: ArchiveContext, images: Images
) -> dict[str, Any]:
    """The SCP Deployment. ``replicas`` is left to the HPA (never in our applied fields)."""
    selector = common.selector_labels(COMPONENT, node)
    volumes, mounts = common.scratch_volumes()
    if spec.tls is not None:
        volumes.append({"name": "tls", "secret": {"secretName": spec.tls.secret_name}})
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    container: dict[str, Any] = {
        "name": COMPONENT,
        "image": spec.image or images.scp,
        "command": ["noctis", "scp"],
        "ports": [
            {"name": "dicom", "containerPort": spec.port, "protocol": "TCP"},
            {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
        ],
        "envFrom": [
            {"configMapRef": {"name": archive.config_map}},
            {"configMapRef": {"name": scp_name(node)}},
        ],
        "env": archive.secret_env(),
        "startupProbe": common.http_probe("/healthz", "health", period=2, failures=60),
        "livenessProbe": common.http_probe("/healthz", "health", period=10, failures=3),
        "readinessProbe": common.http_probe("/readyz", "health", period=5, failures=2),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_SECONDS)]}}},
        "resources": spec.resources.as_dict(),
        "securityContext": common.container_security_context(),
        "volumeMounts": mounts,
    }
    pull_policy = spec.image_pull_policy.value if spec.image_pull_policy else None
    pull_policy = pull_policy or archive.pull_policy or images.pull_policy
    if pull_policy:
        container["imagePullPolicy"] = pull_policy
    annotations = {
        **spec.pod_annotations,
        common.CONFIG_HASH: common.config_hash(archive.config, node_config(spec)),
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": spec.drain_seconds,
        "securityContext": common.pod_security_context(),
        "topologySpreadConstraints": common.spread(selector),
        "containers": [container],
        "volumes": volumes,
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": common.metadata(scp_name(node), namespace, _labels(node)),
        "spec": {
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector},
            # Surge first: a rollout never lowers how many associations can be accepted.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": _labels(node), "annotations": annotations},
                "spec": pod_spec,
            },
        },
    }


def build_service(node: str, namespace: str, spec: DicomNodeSpec) -> dict[str, Any]:
    svc = spec.service
    port: dict[str, Any] = {
        "name": "dicom",
        "port": spec.service_port,
        "targetPort": "dicom",
        "protocol": "TCP",
    }
    if svc.node_port is not None:
        port["nodePort"] = svc.node_port
    service_spec: dict[str, Any] = {
        "type": svc.type.value,
        "selector": common.selector_labels(COMPONENT, node),
        "ports": [port],
    }
    if svc.type != ServiceType.CLUSTER_IP:
        service_spec["externalTrafficPolicy"] = svc.external_traffic_policy.value
    if svc.type == ServiceType.LOAD_BALANCER:
        if svc.load_balancer_source_ranges:
            service_spec["loadBalancerSourceRanges"] = list(svc.load_balancer_source_ranges)
        if svc.load_balancer_class:
            service_spec["loadBalancerClass"] = svc.load_balancer_class
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": common.metadata(scp_name(node), namespace, _labels(node), svc.annotations),
        "spec": service_spec,
    }


def build_hpa(node: str, namespace: str, spec: DicomNodeSpec) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": common.metadata(scp_name(node), namespace, _labels(node)),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": scp_name(node),
            },
            "minReplicas": spec.min_replicas,
            "maxReplicas": spec.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": spec.target_cpu_utilization,
                        },
                    },
                }
            ],
            # Scale down slowly, one pod at a time: each stopping pod drains its associations.
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                }
            },
        },
    }


def build_pdb(node: str, namespace: str) -> dict[str, Any]:
    return common.pdb(
        scp_name(node), namespace, _labels(node), common.selector_labels(COMPONENT, node)
    )


def build_all(
    node: str, namespace: str, spec: DicomNodeSpec, archive: ArchiveContext, images: Images
) -> list[dict[str, Any]]:
    return [
        build_config_map(node, namespace, spec),
        build_deployment(node, namespace, spec, archive, images),
        build_service(node, namespace, spec),
        build_hpa(node, namespace, spec),
        build_pdb(node, namespace),
    ]


def external_endpoint(service: dict[str, Any] | None, port: int) -> str:
    """``address:port`` from the Service's load-balancer status (or its node port)."""
    if not service:
        return ""
    ingress = (service.get("status") or {}).get("loadBalancer", {}).get("ingress") or []
    for entry in ingress:
        address = entry.get("ip") or entry.get("hostname")
        if address:
            return f"{address}:{port}"
    return ""
