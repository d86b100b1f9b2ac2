"""The chart's rendered objects pass the API server's validation (server-side dry run)."""

from __future__ import annotations

import pytest
from operator_support import CHART

from support.kube import ControlPlane

pytestmark = pytest.mark.kube


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "operator.clusterWide=true", "--set", "database.url=postgresql://db/noctis"],
        ["--set", "operator.watchNamespaces={default,kube-public}", "--set", "operator.replicas=2"],
    ],
    ids=["default", "cluster-wide", "two-namespaces"],
)
def test_rendered_chart_passes_server_dry_run(kube: ControlPlane, values: list[str]) -> None:
    rendered = kube.helm("template", "noctis", str(CHART), "--namespace", "default", *values)
    result = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered.stdout)
    assert "deployment.apps/noctis-operator created (server dry run)" in result.stdout
    assert "job.batch/noctis-migrate created (server dry run)" in result.stdout


def test_install_notes(kube: ControlPlane) -> None:
    result = kube.helm(
        "install", "noctis", str(CHART), "--namespace", "default", "--dry-run=server"
    )
    assert "kubectl -n default apply -f storagepool.yaml" in result.stdout
    assert "watches default." in result.stdout
