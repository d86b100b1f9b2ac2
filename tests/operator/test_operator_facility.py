"""Facility sync into the index, on SQLite and PostgreSQL, with a stand-in for the API server."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from noctis.index.db import make_engine, make_sessionmaker
from noctis.index.migrate import upgrade
from noctis.index.models import Facility
from noctis.operator import facility
from noctis.operator.builders.archive import Images
from noctis.operator.context import Operator
from noctis.operator.errors import Blocked, SpecInvalid
from noctis.operator.kinds import Resource
from noctis.operator.settings import OperatorSettings


class StatusKube:
    """get() returns the stored objects; patch_status() merges into their status."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects = {(o["kind"], o["metadata"]["name"]): copy.deepcopy(o) for o in objects}

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get((resource.kind, name)))

    def patch_status(
        self, resource: Resource, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        obj = self.objects[(resource.kind, name)]
        obj.setdefault("status", {}).update(status)
        return copy.deepcopy(obj)


def facility_cr(spec: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "pacs.noctis.io/v1alpha1",
        "kind": "Facility",
        "metadata": {"name": "north", "namespace": "pacs", "uid": "u1", "generation": generation},
        "spec": spec,
    }


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    url = (
        request.getfixturevalue("pg_url")
        if request.param == "postgres"
        else f"sqlite:///{tmp_path / 'index.sqlite3'}"
    )
    upgrade(url)
    yield url


def operator(kube: StatusKube, url: str | None) -> Operator:
    engine = make_engine(url) if url else None
    events: list[tuple[str, str, str]] = []
    op = Operator(
        settings=OperatorSettings(database_url=url),
        kube=kube,  # type: ignore[arg-type]
        images=Images("s", "a", "w"),
        events=lambda body, type_, reason, message: events.append((type_, reason, message)),
        engine=engine,
        sessions=make_sessionmaker(engine) if engine else None,
    )
    op.recorded = events  # type: ignore[attr-defined]
    return op


def test_sync_update_and_disable(database_url: str) -> None:
    body = facility_cr({"applicationEntities": [{"aeTitle": "NORTH_CT", "host": "10.0.0.5"}]})
    kube = StatusKube(body)
    op = operator(kube, database_url)
    facility.reconcile(op, body, apply_always=True)
    status = kube.objects[("Facility", "north")]["status"]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "Synced": "True",
        "QuotaExceeded": "False",
        "Consistent": "True",
    }
    assert (status["studies"], status["bytes"], status["applicationEntities"]) == (0, 0, 1)
    assert status["observedGeneration"] == 1

    changed = facility_cr({"applicationEntities": [{"aeTitle": "NORTH_MR"}]}, generation=2)
    kube.objects[("Facility", "north")]["spec"] = changed["spec"]
    facility.reconcile(op, changed, apply_always=False)  # differs from the registry: applied
    with op.index_sessions()() as session:
        row = session.scalar(select(Facility).where(Facility.name == "north"))
        assert row is not None and row.enabled
        assert [ae.ae_title for ae in row.application_entities] == ["NORTH_MR"]

    facility.disable(op, changed)
    with op.index_sessions()() as session:
        row = session.scalar(select(Facility).where(Facility.name == "north"))
        assert row is not None and not row.enabled
    assert ("Normal", "Disabled") in [e[:2] for e in op.recorded]  # type: ignore[attr-defined]
    assert op.engine is not None
    op.engine.dispose()


def test_missing_storage_pool_is_not_ready_but_synced(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    upgrade(url)
    body = facility_cr({"storagePool": "absent"})
    kube = StatusKube(body)
    op = operator(kube, url)
    facility.reconcile(op, body, apply_always=True)
    conditions = {c["type"]: c for c in kube.objects[("Facility", "north")]["status"]["conditions"]}
    assert conditions["Synced"]["status"] == "True"
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == (
        "False",
        "StoragePoolNotFound",
    )


def test_without_a_database_it_says_so() -> None:
    body = facility_cr({})
    with pytest.raises(Blocked) as caught:
        facility.reconcile(operator(StatusKube(body), None), body, apply_always=True)
    assert caught.value.reason == "IndexNotConfigured"


def test_invalid_spec() -> None:
    body = facility_cr({"applicationEntities": [{"aeTitle": "X"}, {"aeTitle": "X"}]})
    with pytest.raises(SpecInvalid, match="AE titles listed twice"):
        facility.reconcile(operator(StatusKube(body), None), body, apply_always=True)
