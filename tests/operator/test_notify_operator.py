"""A Facility's webhooks on a real API server, reconciled by the operator under the chart's
RBAC: the CRD refuses a webhook of an unknown kind; an edit adding a webhook reaches the
registry (the worker's fan-out reads it there) and gives the worker pods, only them, the
webhook's secret from its Secret."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from operator_support import ROOT, Cluster, operator_log_tail
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from noctis.index.models import Facility
from support import wait

pytestmark = [pytest.mark.kube, pytest.mark.s3]

EXAMPLES = ROOT / "crds" / "examples"
VARIABLE = "NOCTIS_WEBHOOK_SECRETS__st-mary__pager"
WEBHOOK = {
    "name": "pager",
    "url": "https://pager.st-mary.example/noctis",
    "kinds": ["stat-arrived", "critical-result"],
    "secretRef": {"name": "st-mary-webhooks", "key": "pager"},
}


def _example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())  # type: ignore[no-any-return]


def _env(cluster: Cluster, deployment: str) -> dict[str, Any]:
    body = cluster.get("deployment", deployment) or {}
    (container,) = body["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("valueFrom") for e in container["env"]}


def test_a_facility_webhook_reaches_the_registry_and_its_secret_the_workers(
    cluster: Cluster,
) -> None:
    pool = _example("storagepool")
    pool["spec"].update(
        endpoint=f"http://{cluster.s3.endpoint}", bucket=f"{cluster.namespace}-images"
    )
    cluster.apply(pool)
    cluster.apply(_example("archive"))
    cluster.apply(_example("facility"))
    cluster.wait_condition("archive", "noctis")
    cluster.wait_condition("facility", "st-mary", type_="Synced")
    assert VARIABLE not in _env(cluster, "noctis-worker")

    refused = cluster.kube.kubectl(
        "patch",
        "facility",
        "st-mary",
        "--namespace",
        cluster.namespace,
        "--type",
        "merge",
        "-p",
        '{"spec": {"notifications": {"webhooks": [{"name": "x", "url": "https://x.example",'
        ' "kinds": ["lunch"], "secretRef": {"name": "s", "key": "k"}}]}}}',
        check=False,
    )
    assert refused.returncode != 0 and "lunch" in refused.stderr, refused.stderr

    patch = {"spec": {"notifications": {"webhooks": [WEBHOOK]}}}
    cluster.kubectl("patch", "facility", "st-mary", "--type", "merge", "-p", yaml.safe_dump(patch))
    for deployment in ("noctis-worker", "noctis-transfer"):
        found = wait.until(
            lambda deployment=deployment: _env(cluster, deployment).get(VARIABLE),
            timeout=30,
            what=f"the webhook's secret in {deployment}",
            context=operator_log_tail(cluster.log),
            interval=0.2,
        )
        assert found == {"secretKeyRef": {"name": "st-mary-webhooks", "key": "pager"}}
    assert VARIABLE not in _env(cluster, "noctis-api")
    config = (cluster.get("configmap", "noctis-config") or {}).get("data") or {}
    assert not any("WEBHOOK" in key for key in config)

    def declared() -> Any:
        with Session(create_engine(cluster.database_url)) as session:
            facility = session.scalar(select(Facility).where(Facility.name == "st-mary"))
            return facility and (facility.spec or {}).get("notifications")

    notifications = wait.until(declared, timeout=30, what="the webhook in the registry")
    assert notifications["webhooks"][0]["url"] == WEBHOOK["url"]
    assert notifications["webhooks"][0]["secretRef"] == WEBHOOK["secretRef"]
