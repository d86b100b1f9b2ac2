"""The CRDs in crds/ (and the chart's copy) are what the generator makes from the spec models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from noctis.operator import crdgen
from noctis.operator.kinds import CRD_KINDS
from noctis.specs.archive import ArchiveSpec
from noctis.specs.dicomnode import DicomNodeSpec
from noctis.specs.facility import FacilitySpec
from noctis.specs.route import RouteSpec
from noctis.specs.storagepool import StoragePoolSpec

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
CHART_CRDS = ROOT / "charts" / "noctis" / "crds"
MODELS = {
    "StoragePool": StoragePoolSpec,
    "Facility": FacilitySpec,
    "Archive": ArchiveSpec,
    "DicomNode": DicomNodeSpec,
    "Route": RouteSpec,
}


@pytest.mark.parametrize("directory", [CRDS, CHART_CRDS], ids=["crds", "chart"])
def test_committed_crds_are_generated(directory: Path) -> None:
    expected = crdgen.render_files()
    committed = {p.name: p.read_text() for p in directory.glob("*.yaml")}
    assert committed == expected, (
        f"{directory} is out of date: run `python -m noctis.operator.crdgen`"
    )


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found += _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _walk(value, f"{path}[{i}]")
    return found


@pytest.mark.parametrize("kind", CRD_KINDS, ids=lambda k: k.resource.kind)
def test_schemas_are_structural(kind: crdgen.CrdKind) -> None:
    version = crdgen.crd(kind)["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert not {"$ref", "anyOf", "allOf", "oneOf", "title", "$defs"} & node.keys(), path
        assert node.get("additionalProperties") is not False, path
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):  # OpenAPI v3.0: booleans only
            assert isinstance(node.get(bound, False), bool), f"{path}: numeric {bound}"
    assert version["subresources"] == {"status": {}}
    assert version["additionalPrinterColumns"][0]["name"] == "Ready"
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_validation_reaches_the_schema() -> None:
    by_kind = {k.resource.kind: crdgen.crd(k) for k in CRD_KINDS}

    def spec_of(kind: str) -> dict[str, Any]:
        root = by_kind[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        return root["properties"]["spec"]  # type: ignore[no-any-return]

    node = spec_of("DicomNode")["properties"]
    assert node["aeTitle"]["maxLength"] == 16
    assert "\\x5D" in node["aeTitle"]["pattern"]  # everything but backslash (0x5C)
    assert (node["port"]["minimum"], node["port"]["maximum"]) == (1, 65535)
    assert node["service"]["properties"]["loadBalancerSourceRanges"]["items"]["format"] == "cidr"
    assert node["service"]["properties"]["type"]["enum"] == [
        "LoadBalancer",
        "NodePort",
        "ClusterIP",
    ]
    assert any("maxReplicas" in r["rule"] for r in spec_of("DicomNode")["x-kubernetes-validations"])
    facility = spec_of("Facility")["properties"]["applicationEntities"]["items"]["properties"]
    assert facility["allowedCIDRs"]["items"]["format"] == "cidr"
    assert facility["services"]["default"] == [
        *("echo", "store", "find", "move", "get", "commitment"),
        *("worklist", "mpps"),
    ]
    pool = spec_of("StoragePool")["properties"]
    assert pool["deletionPolicy"] == {
        "type": "string",
        "default": "Retain",
        "enum": ["Retain", "Delete"],
    }


@pytest.mark.parametrize("path", sorted((CRDS / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid_specs(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        if document["kind"] in MODELS:
            assert document["apiVersion"] == "pacs.noctis.io/v1alpha1"
            MODELS[document["kind"]].model_validate(document["spec"])


def _exclusive_bounds(node: object) -> list[object]:
    if isinstance(node, list):
        return [found for item in node for found in _exclusive_bounds(item)]
    if not isinstance(node, dict):
        return []
    here = [node[k] for k in ("exclusiveMinimum", "exclusiveMaximum") if k in node]
    return here + [found for value in node.values() for found in _exclusive_bounds(value)]


@pytest.mark.parametrize("kind", CRD_KINDS, ids=lambda k: k.resource.kind)
def test_exclusive_bounds_are_booleans_as_the_api_server_wants(kind: crdgen.CrdKind) -> None:
    """OpenAPI v3.0 (the API server's) takes exclusiveMinimum/Maximum as booleans beside
    minimum/maximum; a number (JSON Schema 2020, pydantic's gt/lt) makes it refuse the CRD."""
    bounds = _exclusive_bounds(crdgen.crd(kind))
    assert all(isinstance(bound, bool) for bound in bounds), bounds
