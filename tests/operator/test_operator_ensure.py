"""The ensure step and conditions, against an in-memory stand-in for the API server."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from noctis.operator.conditions import READY, Cond, merge_conditions
from noctis.operator.ensure import drift, ensure, owned_by
from noctis.operator.errors import Blocked
from noctis.operator.kinds import FIELD_MANAGER, Resource

OWNER = {
    "apiVersion": "pacs.noctis.io/v1alpha1",
    "kind": "DicomNode",
    "metadata": {"name": "main", "namespace": "pacs", "uid": "uid-1", "labels": {"team": "x"}},
}


class FakeKube:
    """Enough of the API for ensure(): objects by (kind, namespace, name), applies as merges."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.applies: list[tuple[str, bool, str]] = []
        self.version = 0

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((resource.kind, namespace, name))
        return copy.deepcopy(found)

    def apply(
        self, resource: Resource, obj: dict[str, Any], *, force: bool, manager: str = FIELD_MANAGER
    ) -> dict[str, Any]:
        meta = obj["metadata"]
        key = (resource.kind, meta["namespace"], meta["name"])
        self.applies.append((meta["name"], force, manager))
        current = self.objects.get(key, {})
        merged = _merge(copy.deepcopy(current), copy.deepcopy(obj))
        if merged != current:
            self.version += 1
            merged["metadata"]["resourceVersion"] = str(self.version)
        self.objects[key] = merged
        return copy.deepcopy(merged)


def _merge(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = _merge(base[key], value)
        else:
            base[key] = value
    return base


def service(port: int = 104) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "main-scp", "namespace": "pacs", "labels": {"a": "b"}},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "dicom", "port": port}]},
    }


def test_creates_adopts_and_then_leaves_alone() -> None:
    kube = FakeKube()
    created = ensure(kube, OWNER, service())  # type: ignore[arg-type]
    assert created.action == "created"
    refs = created.obj["metadata"]["ownerReferences"]
    assert refs == [
        {
            "apiVersion": "pacs.noctis.io/v1alpha1",
            "kind": "DicomNode",
            "name": "main",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert created.obj["metadata"]["labels"] == {"a": "b", "team": "x"}
    assert owned_by(created.obj, "uid-1")
    assert ensure(kube, OWNER, service()).action == "unchanged"  # type: ignore[arg-type]
    assert kube.applies == [("main-scp", False, "noctis-operator")]


def test_initial_fields_use_their_own_manager() -> None:
    kube = FakeKube()
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "main-scp", "namespace": "pacs"},
        "spec": {"paused": False},
    }
    result = ensure(kube, OWNER, deployment, initial={"spec": {"replicas": 2}})  # type: ignore[arg-type]
    assert result.obj["spec"]["replicas"] == 2
    assert [a[2] for a in kube.applies] == ["noctis-operator", "noctis-operator-initial"]


def test_drift_is_patched_with_force() -> None:
    kube = FakeKube()
    ensure(kube, OWNER, service())  # type: ignore[arg-type]
    kube.objects[("Service", "pacs", "main-scp")]["spec"]["ports"][0]["port"] = 9999
    result = ensure(kube, OWNER, service())  # type: ignore[arg-type]
    assert result.action == "patched"
    assert result.drift == (".spec.ports[0].port",)
    assert kube.applies[-1] == ("main-scp", True, "noctis-operator")
    assert kube.objects[("Service", "pacs", "main-scp")]["spec"]["ports"][0]["port"] == 104


def test_refuses_an_object_it_does_not_own() -> None:
    kube = FakeKube()
    foreign = service()
    foreign["metadata"]["ownerReferences"] = [{"uid": "someone-else", "controller": True}]
    kube.objects[("Service", "pacs", "main-scp")] = foreign
    with pytest.raises(Blocked) as caught:
        ensure(kube, OWNER, service())  # type: ignore[arg-type]
    assert caught.value.reason == "ChildConflict"
    assert "not owned by DicomNode main" in caught.value.message
    assert kube.applies == []


def test_waits_while_the_child_is_being_deleted() -> None:
    kube = FakeKube()
    ensure(kube, OWNER, service())  # type: ignore[arg-type]
    kube.objects[("Service", "pacs", "main-scp")]["metadata"]["deletionTimestamp"] = "now"
    with pytest.raises(Blocked) as caught:
        ensure(kube, OWNER, service())  # type: ignore[arg-type]
    assert caught.value.reason == "ChildDeleting"


def test_drift_ignores_server_defaults_and_number_spelling() -> None:
    desired = {"spec": {"replicas": 2, "ports": [{"port": 104}], "cpu": "1"}}
    actual = {
        "spec": {
            "replicas": 2,
            "ports": [{"port": 104, "nodePort": 31000}],
            "cpu": 1,
            "clusterIP": "10.0.0.1",
        },
        "status": {},
    }
    assert drift(desired, actual) == []
    assert drift(desired, {"spec": {"replicas": 3, "ports": [], "cpu": 1}}) == [
        ".spec.replicas",
        ".spec.ports",
    ]


def test_conditions_keep_transition_time_until_status_changes() -> None:
    first = merge_conditions([], [Cond(READY, False, "Waiting", "no")], 1, timestamp="t1")
    same = merge_conditions(first, [Cond(READY, False, "StillWaiting", "no")], 2, timestamp="t2")
    assert same[0]["lastTransitionTime"] == "t1"
    assert (same[0]["reason"], same[0]["observedGeneration"]) == ("StillWaiting", 2)
    flipped = merge_conditions(same, [Cond(READY, True, "Ready")], 2, timestamp="t3")
    assert flipped[0]["lastTransitionTime"] == "t3"
    assert flipped[0]["status"] == "True"
    other = merge_conditions(flipped, [Cond("Available", None, "Unknown")], 3, timestamp="t4")
    assert [c["type"] for c in other] == ["Ready", "Available"]
    assert other[1]["status"] == "Unknown"
