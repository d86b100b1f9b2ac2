"""Two operator replicas: kopf peering keeps one active; the standby takes over when it goes."""

from __future__ import annotations

import json

import pytest
from operator_support import (
    Cluster,
    operator_log_tail,
)

from support import wait

pytestmark = [pytest.mark.kube, pytest.mark.s3]


def facility(name: str, ae_title: str) -> dict[str, object]:
    return {
        "apiVersion": "pacs.noctis.io/v1alpha1",
        "kind": "Facility",
        "metadata": {"name": name},
        "spec": {"applicationEntities": [{"aeTitle": ae_title}]},
    }


def test_standby_pauses_then_takes_over(cluster: Cluster) -> None:
    active = cluster.operator
    assert active is not None

    def peers() -> int:
        peering = json.loads(cluster.kubectl("get", "kopfpeering", "noctis", "-o", "json"))
        return len(peering.get("status") or {})

    # Replicas starting at the same instant may both run until they see each other; here the
    # standby starts once the active one is announced, so it must never run.
    wait.until(
        lambda: peers() == 1,
        timeout=30,
        what="the active replica in the peering",
        context=operator_log_tail(active.log),
        interval=0.2,
    )
    standby = cluster.start_operator("standby", NOCTIS_OPERATOR_PRIORITY="0")
    wait.until(
        lambda: peers() == 2,
        timeout=30,
        what="both replicas in the peering",
        context=operator_log_tail(standby.log),
        interval=0.2,
    )

    cluster.apply(facility("alpha", "ALPHA_CT"))
    cluster.wait_condition("facility", "alpha")
    # A replica starts paused and resumes only if no peer has a higher priority.
    assert "Resuming operations" not in standby.text(), standby.text()
    assert "/alpha]" not in standby.text(), standby.text()  # the active replica did the work

    active.stop()  # leaves the peering on the way out
    wait.until(
        lambda: "Resuming operations after the pause" in standby.text(),
        timeout=30,
        what="the standby to resume",
        context=operator_log_tail(standby.log),
        interval=0.2,
    )
    cluster.apply(facility("beta", "BETA_CT"))
    cluster.wait_condition("facility", "beta")  # the active replica is gone: the standby did it
    done = f"[{cluster.namespace}/beta] Handler 'facility_reconcile' succeeded"
    wait.until(
        lambda: done in standby.text(),
        timeout=10,
        what="the standby's log of it",
        context=operator_log_tail(standby.log),
        interval=0.2,
    )
    assert standby.text().index("Resuming operations") < standby.text().index(done)
