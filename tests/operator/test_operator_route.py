"""The Route kind on the test bed's API server, the operator running as the chart's
ServiceAccount: a Route naming a facility or destination that is not registered is refused
with the reason; once the Facility registers them the rule is in the index, its progress
(read from the index) shows in the status, and deleting the Route removes the rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from operator_support import Cluster
from sqlalchemy import select

from noctis.core.ingest import FacilityRef
from noctis.core.queue import NullQueue
from noctis.core.routing import route_study
from noctis.core.runtime import Runtime
from noctis.index.models import Facility
from noctis.index.routing import RouteRow
from noctis.settings import Settings
from support import wait
from support.dicomdata import generate_ct_series
from support.incoming import ingest_file

pytestmark = pytest.mark.kube


def _route(destinations: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "pacs.noctis.io/v1alpha1",
        "kind": "Route",
        "metadata": {"name": "to-pacs"},
        "spec": {"facility": "east", "destinations": destinations, "match": {"modalities": ["CT"]}},
    }


def _facility(port: int) -> dict[str, Any]:
    return {
        "apiVersion": "pacs.noctis.io/v1alpha1",
        "kind": "Facility",
        "metadata": {"name": "east"},
        "spec": {
            "applicationEntities": [
                {"aeTitle": "EAST_CT", "allowedCIDRs": ["127.0.0.0/8"]},
                {"aeTitle": "EAST_PACS", "host": "127.0.0.1", "port": port},
            ]
        },
    }


def test_a_route_is_refused_until_registered_then_reports_progress(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.apply(_route(["EAST_PACS"]))
    refused = cluster.wait_condition("route", "to-pacs", "False", reason="UnknownFacility")
    assert "east" in refused["message"]

    cluster.apply(_facility(11112))
    cluster.wait_condition("facility", "east")
    cluster.apply(_route(["EAST_PACS", "ELSEWHERE"]))
    refused = cluster.wait_condition("route", "to-pacs", "False", reason="UnknownDestination")
    assert "ELSEWHERE" in refused["message"]
    assert cluster.events("to-pacs", "UnknownDestination")

    cluster.apply(_route(["EAST_PACS"]))
    cluster.wait_condition("route", "to-pacs", "True", reason="Routing")

    runtime = Runtime.open(
        Settings(data_dir=tmp_path, database_url=cluster.database_url), queue=NullQueue()
    )
    try:
        with runtime.sessions() as session:
            row = session.scalar(select(RouteRow).where(RouteRow.name == "to-pacs"))
            assert row is not None
            assert (row.namespace, row.destinations) == (cluster.namespace, ["EAST_PACS"])
            east = session.scalar(select(Facility).where(Facility.name == "east"))
            assert east is not None
            facility = FacilityRef(east.id, east.name)
        files = generate_ct_series(tmp_path / "ct", slices=3, size=16)
        study = str(ingest_file(runtime, facility, files[0]).header.study_instance_uid)
        for path in files[1:]:
            ingest_file(runtime, facility, path)
        assert route_study(runtime, "east", study) == {"EAST_PACS": 3}

        def counted() -> dict[str, Any] | None:
            status = (cluster.get("route", "to-pacs") or {}).get("status") or {}
            return status if status.get("pending") == 3 else None

        status = wait.until(counted, timeout=30, what="the Route status to count the transfers")
        assert status["destinations"] == [
            {
                "destination": "EAST_PACS",
                "pending": 3,
                "sent": 0,
                "failed": 0,
                "dead": 0,
                "lastError": "",
            }
        ]
        printed = cluster.kubectl("get", "routes")
        assert "to-pacs" in printed and "east" in printed

        cluster.kubectl("delete", "route", "to-pacs", "--wait=true", "--timeout=30s")

        def removed() -> bool:
            with runtime.sessions() as session:
                return session.scalar(select(RouteRow.id)) is None

        wait.until(removed, timeout=30, what="the rule to leave the index")
    finally:
        runtime.close()
