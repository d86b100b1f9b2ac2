"""The operator against a real control plane, under the chart's ServiceAccount token.

The control plane comes from tests/support/kube.py; the chart is rendered with `helm template`
and applied, so the operator runs with exactly the RBAC the chart grants (a missing verb fails
a test). S3 is the session's SeaweedFS (tests/conftest.py), the index a migrated SQLite file.
Every test has a namespace of its own (`cluster`), removed with its buckets after the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_support import (
    SERVICE_ACCOUNT,
    Cluster,
    install_chart,
    remove_buckets,
    secrets_yaml,
)

from noctis.index.migrate import upgrade
from support.kube import ControlPlane, install_noctis_crds
from support.logs import ServerLogs
from support.s3 import SeaweedFS


@pytest.fixture(scope="session")
def kube(kube: ControlPlane) -> Iterator[ControlPlane]:
    """The session's control plane, with the Noctis CRDs installed and established."""
    install_noctis_crds(kube)
    yield kube


@pytest.fixture
def cluster(
    kube: ControlPlane,
    kube_namespace: str,
    s3_server: SeaweedFS,
    tmp_path: Path,
    server_logs: ServerLogs,
) -> Iterator[Cluster]:
    """The test's own namespace with the chart, its secrets, and `noctis operator` running
    as the chart's ServiceAccount; its buckets are removed after the test."""
    s3_server.up()
    namespace = kube_namespace
    database_url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    upgrade(database_url)
    install_chart(kube, namespace)
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=secrets_yaml(s3_server, database_url))
    token = kube.create_token(namespace, SERVICE_ACCOUNT)
    kubeconfig = kube.kubeconfig_for_token(token, user=f"operator-{namespace}")
    plane = Cluster(
        kube, namespace, database_url, s3_server, kubeconfig, tmp_path, server_logs=server_logs
    )
    try:
        plane.start_operator("main")
        yield plane
    finally:
        plane.stop_operators()
        s3_server.up()
        remove_buckets(s3_server, f"{namespace}-")
