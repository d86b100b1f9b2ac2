"""One operator watching two namespaces, one index: a facility name is one registry entry.

Facility is a namespaced resource, but its name keys the registry entry the SCP and API
enforce, the facility's objects and DICOMweb's ``?facility=``. A Facility named like another
namespace's is refused (Ready=False, NameTaken, an Event naming the owner) and never touches
the owner's entry; deleting the owner frees the name for it within seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_support import (
    SERVICE_ACCOUNT,
    Cluster,
    install_chart,
    operator_log_tail,
)
from sqlalchemy import select

from noctis.core.facilities import resolve_caller
from noctis.index.db import make_engine, make_sessionmaker
from noctis.index.migrate import upgrade
from noctis.index.models import Facility
from support import wait
from support.kube import ControlPlane, fresh_namespace
from support.logs import ServerLogs

pytestmark = pytest.mark.kube

MODALITY_ADDRESS = "10.1.0.5"


@pytest.fixture
def namespaces(
    kube: ControlPlane, tmp_path: Path, server_logs: ServerLogs
) -> Iterator[tuple[Cluster, Cluster]]:
    """Namespaces a and b, the chart installed in a watching both (a RoleBinding in each),
    and `noctis operator` running as the chart's ServiceAccount; a view of each namespace."""
    database_url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    upgrade(database_url)
    with fresh_namespace(kube, "ns-a") as first, fresh_namespace(kube, "ns-b") as second:
        install_chart(kube, first, f"operator.watchNamespaces={{{first},{second}}}")
        token = kube.create_token(first, SERVICE_ACCOUNT)
        kubeconfig = kube.kubeconfig_for_token(token, user=f"operator-{first}")
        # No StoragePool here: the views need no S3 server.
        a = Cluster(kube, first, database_url, None, kubeconfig, tmp_path, server_logs=server_logs)  # type: ignore[arg-type]
        b = Cluster(kube, second, database_url, None, kubeconfig, tmp_path)  # type: ignore[arg-type]
        try:
            b.operator = a.start_operator("main", NOCTIS_OPERATOR_NAMESPACES=f"{first},{second}")
            yield a, b
        finally:
            a.stop_operators()


def facility(name: str, ae_title: str) -> dict[str, object]:
    return {
        "apiVersion": "pacs.noctis.io/v1alpha1",
        "kind": "Facility",
        "metadata": {"name": name},
        "spec": {
            "applicationEntities": [
                {"aeTitle": ae_title, "allowedCIDRs": ["10.1.0.0/24"], "services": ["store"]}
            ]
        },
    }


def registry(cluster: Cluster, name: str) -> tuple[str | None, bool, list[str]]:
    """(namespace, enabled, AE titles) of the registry entry, as the SCP and API read it."""
    engine = make_engine(cluster.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            row = session.scalar(select(Facility).where(Facility.name == name))
            assert row is not None
            return row.namespace, row.enabled, [ae.ae_title for ae in row.application_entities]
    finally:
        engine.dispose()


def admitted(cluster: Cluster, ae_title: str) -> str | None:
    """The facility the SCP would file an association from ``ae_title`` under, or None."""
    engine = make_engine(cluster.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            caller = resolve_caller(session, ae_title, MODALITY_ADDRESS)
            return caller.facility_name if caller else None
    finally:
        engine.dispose()


def test_a_second_namespace_is_refused_then_takes_the_name_once_freed(
    namespaces: tuple[Cluster, Cluster],
) -> None:
    a, b = namespaces
    a.apply(facility("radiology", "A_CT"))
    a.wait_condition("facility", "radiology")
    b.apply(facility("radiology", "B_CT"))

    refused = b.wait_condition("facility", "radiology", "False", reason="NameTaken")
    assert f"namespace {a.namespace}" in refused["message"]
    wait.until(
        lambda: b.events("radiology", "NameTaken"),
        timeout=30,
        what="the NameTaken Event",
        context=operator_log_tail(b.log),
        interval=0.2,
    )
    (event, *_) = b.events("radiology", "NameTaken")
    assert event["type"] == "Warning" and f"namespace {a.namespace}" in event["message"]
    # The owner is untouched, through the create and a few timer ticks of the refused one.
    wait.until(
        lambda: len(b.events("radiology", "NameTaken")) >= 2,
        timeout=30,
        what="a retry",
        context=operator_log_tail(b.log),
        interval=0.2,
    )
    assert a.condition("facility", "radiology")["status"] == "True"  # type: ignore[index]
    assert registry(a, "radiology") == (a.namespace, True, ["A_CT"])
    assert admitted(a, "A_CT") == "radiology"
    assert admitted(a, "B_CT") is None

    a.kubectl("delete", "facility", "radiology", "--timeout=60s")
    b.wait_condition("facility", "radiology", timeout=20)  # its retry or timer claims it
    assert registry(b, "radiology") == (b.namespace, True, ["B_CT"])
    assert admitted(b, "B_CT") == "radiology"
    assert admitted(b, "A_CT") is None
    (claimed,) = wait.until(
        lambda: b.events("radiology", "Claimed"), timeout=30, what="the Claimed Event", interval=0.2
    )
    assert f"namespace {a.namespace}" in claimed["message"]


def test_deleting_the_refused_one_leaves_the_owner_alone(
    namespaces: tuple[Cluster, Cluster],
) -> None:
    a, b = namespaces
    a.apply(facility("cardiology", "A_ECHO"))
    a.wait_condition("facility", "cardiology")
    b.apply(facility("cardiology", "B_ECHO"))
    b.wait_condition("facility", "cardiology", "False", reason="NameTaken")

    b.kubectl("delete", "facility", "cardiology", "--timeout=60s")
    wait.until(
        lambda: b.events("cardiology", "NotOwned"),
        timeout=30,
        what="the NotOwned Event",
        context=operator_log_tail(b.log),
        interval=0.2,
    )
    assert registry(a, "cardiology") == (a.namespace, True, ["A_ECHO"])
    assert admitted(a, "A_ECHO") == "cardiology"
    a.wait_condition("facility", "cardiology")
