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
        ["--set", "quickstart.enabled=true", "--set", "quickstart.s3.deletionPolicy=Delete"],
    ],
    ids=["default", "cluster-wide", "two-namespaces", "quickstart"],
)
def test_rendered_chart_passes_server_dry_run(kube: ControlPlane, values: list[str]) -> None:
    rendered = kube.helm("template", "noctis", str(CHART), "--namespace", "default", *values)
    result = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered.stdout)
    assert "deployment.apps/noctis-operator created (server dry run)" in result.stdout
    if "quickstart.enabled=true" in values:
        assert "statefulset.apps/noctis-postgresql created (server dry run)" in result.stdout
        assert "dicomnode.pacs.noctis.io/noctis created (server dry run)" in result.stdout
        assert "job.batch/noctis-quickstart-teardown created (server dry run)" in result.stdout
    else:
        assert "job.batch/noctis-migrate created (server dry run)" in result.stdout


def test_install_notes(kube: ControlPlane) -> None:
    result = kube.helm(
        "install", "noctis", str(CHART), "--namespace", "default", "--dry-run=server"
    )
    assert "kubectl -n default apply -f storagepool.yaml" in result.stdout
    assert "watches default." in result.stdout


def test_install_notes_of_the_quickstart(kube: ControlPlane) -> None:
    result = kube.helm(
        "install", "noctis", str(CHART), "--namespace", "default", "--dry-run=server",
        "--set", "quickstart.enabled=true", "--set", "quickstart.allowedCIDRs={10.88.0.1/32}",
    )  # fmt: skip
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "Quickstart: PostgreSQL, SeaweedFS (S3) and Redis run in this release" in notes
    assert "AE title NOCTIS" in notes and "from 10.88.0.1/32" in notes
    assert "get secret noctis-admin -o jsonpath='{.data.password}' | base64 -d" in notes
    assert "apply -f storagepool.yaml" not in notes
