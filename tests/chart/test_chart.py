"""The Helm chart, rendered offline with `helm template`."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from helm_chart import CHART, ROOT, helm, render_chart

DEPLOYMENT = "templates/operator/operator-deployment.yaml"
CLUSTERROLE = "templates/operator/operator-clusterrole.yaml"
ROLEBINDING = "templates/operator/operator-rolebinding.yaml"
CLUSTERROLEBINDING = "templates/operator/operator-clusterrolebinding.yaml"
PEERING = "templates/operator/operator-kopfpeering.yaml"
MIGRATIONS = "templates/migrations/migrations-job.yaml"
DATABASE = "templates/database/database-secret.yaml"


def kinds_and_names(docs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((d["kind"], d["metadata"]["name"]) for d in docs)


def test_default_chart_renders_exactly() -> None:
    assert kinds_and_names(render_chart()) == [
        ("ClusterRole", "noctis-operator"),
        ("Deployment", "noctis-operator"),
        ("Job", "noctis-migrate"),
        ("KopfPeering", "noctis"),
        ("RoleBinding", "noctis-operator"),
        ("ServiceAccount", "noctis-operator"),
    ]


def test_every_object_has_the_standard_labels() -> None:
    for doc in render_chart({"operator": {"clusterWide": True}, "database": {"url": "x://"}}):
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "noctis", doc["kind"]
        assert labels["app.kubernetes.io/instance"] == "noctis"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert "app.kubernetes.io/component" in labels


def test_operator_deployment() -> None:
    (deployment,) = render_chart(show_only=[DEPLOYMENT])
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "noctis-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/noctis-pacs/noctis-operator:0.1.0"
    assert container["command"] == ["noctis", "operator"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["NOCTIS_OPERATOR_NAMESPACES"] == "pacs"
    assert env["NOCTIS_OPERATOR_PEERING"] == "noctis"
    assert env["NOCTIS_OPERATOR_IMAGE_TAG"] == "0.1.0"
    assert env["NOCTIS_DATABASE_URL"] == {"secretKeyRef": {"name": "noctis-database", "key": "url"}}


def test_operator_metrics_port_and_scale_interval() -> None:
    (deployment,) = render_chart(show_only=[DEPLOYMENT])
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (env["NOCTIS_OPERATOR_METRICS_PORT"], env["NOCTIS_OPERATOR_SCALE_INTERVAL"]) == (
        "9090",
        "15",
    )
    values = {"operator": {"metricsPort": 0, "scaleInterval": 5}}
    (deployment,) = render_chart(values, show_only=[DEPLOYMENT])
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert [p["name"] for p in container["ports"]] == ["health"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (env["NOCTIS_OPERATOR_METRICS_PORT"], env["NOCTIS_OPERATOR_SCALE_INTERVAL"]) == (
        "0",
        "5",
    )


def test_image_settings() -> None:
    values = {"image": {"registry": "registry.local/pacs", "tag": "1.2.3", "pullPolicy": "Always"}}
    (deployment,) = render_chart(values, show_only=[DEPLOYMENT])
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.local/pacs/noctis-operator:1.2.3"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NOCTIS_OPERATOR_IMAGE_REGISTRY"] == "registry.local/pacs"
    assert env["NOCTIS_OPERATOR_IMAGE_PULL_POLICY"] == "Always"


def test_rbac_is_namespaced_by_default() -> None:
    (role,) = render_chart(show_only=[CLUSTERROLE])
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert rules[(("apps",), ("deployments",))] == {"get", "list", "watch", "create", "patch"}
    assert rules[(("apps",), ("deployments/scale",))] == {"get", "patch"}  # worker autoscaling
    assert rules[(("",), ("secrets",))] == {"get"}
    assert all("delete" not in verbs and "*" not in verbs for verbs in rules.values())
    assert all("*" not in r["resources"] for r in role["rules"])
    assert render_chart(show_only=[CLUSTERROLEBINDING]) == []
    (binding,) = render_chart(show_only=[ROLEBINDING])
    assert binding["metadata"]["namespace"] == "pacs"
    assert binding["roleRef"]["kind"] == "ClusterRole"


def test_watch_namespaces_get_a_rolebinding_and_peering_each() -> None:
    values = {"operator": {"watchNamespaces": ["radiology", "cardiology"]}}
    bindings = render_chart(values, show_only=[ROLEBINDING])
    assert [b["metadata"]["namespace"] for b in bindings] == ["radiology", "cardiology"]
    peerings = render_chart(values, show_only=[PEERING])
    assert [(p["kind"], p["metadata"]["namespace"]) for p in peerings] == [
        ("KopfPeering", "radiology"),
        ("KopfPeering", "cardiology"),
    ]
    (deployment,) = render_chart(values, show_only=[DEPLOYMENT])
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["NOCTIS_OPERATOR_NAMESPACES"] == "radiology,cardiology"


def test_cluster_wide() -> None:
    docs = render_chart({"operator": {"clusterWide": True}})
    assert ("ClusterRoleBinding", "noctis-operator") in kinds_and_names(docs)
    assert ("ClusterKopfPeering", "noctis") in kinds_and_names(docs)
    assert not [d for d in docs if d["kind"] == "RoleBinding"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["NOCTIS_OPERATOR_CLUSTERWIDE"] == "true"
    assert "NOCTIS_OPERATOR_NAMESPACES" not in env


def test_operator_disabled_renders_no_operator_objects() -> None:
    values = {"operator": {"enabled": False}}
    for template in (DEPLOYMENT, CLUSTERROLE, ROLEBINDING, PEERING):
        assert render_chart(values, show_only=[template]) == []


def test_database_url_becomes_a_hook_secret_used_by_migrations() -> None:
    values = {"database": {"url": "postgresql+psycopg://noctis:pw@db/noctis"}}
    (secret,) = render_chart(values, show_only=[DATABASE])
    assert secret["stringData"] == {"url": "postgresql+psycopg://noctis:pw@db/noctis"}
    assert secret["metadata"]["annotations"]["helm.sh/hook-weight"] == "-10"
    (job,) = render_chart(values, show_only=[MIGRATIONS])
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["noctis", "migrate"]
    assert container["env"][1]["valueFrom"]["secretKeyRef"]["name"] == "noctis-database"
    assert render_chart({"migrations": {"enabled": False}}, show_only=[MIGRATIONS]) == []


def test_migrations_without_a_database_fail_clearly() -> None:
    result = helm(
        "template", "noctis", str(CHART), "--set", "database.existingSecret=", check=False
    )
    assert result.returncode != 0
    assert "set database.url or database.existingSecret" in result.stderr


def test_schema_rejects_unknown_and_mistyped_values() -> None:
    for bad in ("operator.replicas=two", "operator.colour=blue", "image.pullPolicy=Sometimes"):
        result = helm("template", "noctis", str(CHART), "--set", bad, check=False)
        assert result.returncode != 0, bad


def _schema_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, prop in schema["properties"].items():
        if prop.get("type") == "object" and "properties" in prop:
            out[name] = _schema_defaults(prop)
        else:
            assert "description" in prop and "default" in prop and "type" in prop, name
            out[name] = prop["default"]
    return out


def test_values_and_schema_agree() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert _schema_defaults(schema) == values


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "crds").glob("*.yaml")))
def test_chart_crds_are_the_repository_crds(name: str) -> None:
    assert (CHART / "crds" / name).read_text() == (ROOT / "crds" / name).read_text()
    assert sorted(p.name for p in (CHART / "crds").glob("*")) == sorted(
        p.name for p in (ROOT / "crds").glob("*.yaml")
    )
