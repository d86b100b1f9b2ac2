"""The operator against a real control plane, under the chart's ServiceAccount token.

The control plane comes from tests/support/kube.py; the chart is rendered with `helm template`
and applied, so the operator runs with exactly the RBAC the chart grants (a missing verb fails
a test). S3 is the session's SeaweedFS (tests/conftest.py), the index a migrated SQLite file.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from operator_support import (
    SERVICE_ACCOUNT,
    Cluster,
    install_chart,
    secrets_yaml,
)

from noctis.index.migrate import upgrade
from support.kube import ControlPlane, install_noctis_crds
from support.s3 import SeaweedFS


@pytest.fixture(scope="session")
def kube(kube: ControlPlane) -> Iterator[ControlPlane]:
    """The session's control plane, with the Noctis CRDs installed and established."""
    install_noctis_crds(kube)
    yield kube


@pytest.fixture(scope="module")
def cluster(
    kube: ControlPlane, s3_server: SeaweedFS, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A namespace with the chart, its secrets, and `noctis operator` running as the chart's SA."""
    s3_server.up()
    namespace = f"op-{secrets.token_hex(3)}"
    workdir = tmp_path_factory.mktemp(namespace)
    database_url = f"sqlite:///{workdir / 'index.sqlite3'}"
    upgrade(database_url)
    kube.kubectl("create", "namespace", namespace)
    install_chart(kube, namespace)
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=secrets_yaml(s3_server, database_url))
    token = kube.create_token(namespace, SERVICE_ACCOUNT)
    kubeconfig = kube.kubeconfig_for_token(token, user=f"operator-{namespace}")
    plane = Cluster(kube, namespace, database_url, s3_server, kubeconfig, workdir)
    try:
        plane.start_operator("main")
        yield plane
    finally:
        for running in [*plane.extra_operators, plane.operator]:
            if running is not None:
                running.stop()
        forbidden = [
            line
            for line in plane.operator_log().splitlines()
            if " 403" in line or "Forbidden" in line
        ]
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        assert not forbidden, "the operator hit RBAC refusals:\n" + "\n".join(forbidden[:10])
