"""CustomResourceDefinitions generated from the pydantic spec and status models.

``python -m noctis.operator.crdgen [DIR ...]`` writes one YAML file per kind (default: ``crds/``
and ``charts/noctis/crds/``). The operator validates a CR with the same models, so what the API
server accepts and what the operator understands cannot drift; a test regenerates the files and
compares.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema, to_jsonable_python

from noctis.operator.kinds import CRD_KINDS, GROUP, VERSION, CrdKind
from noctis.specs import common

# JSON-schema keywords a structural CRD schema may carry (the rest is dropped).
_KEEP = {
    "type",
    "properties",
    "items",
    "additionalProperties",
    "required",
    "description",
    "default",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "format",
    "nullable",
    "x-kubernetes-validations",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
}


_ORDER = ["type", "format", "description", "default", "enum"]


def _key_order(key: str) -> tuple[int, str]:
    return (_ORDER.index(key), "") if key in _ORDER else (len(_ORDER), key)


class _CrdJsonSchema(GenerateJsonSchema):
    """Pydantic's JSON schema, plus what a CRD needs: defaults from factories, CIDR format."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().default_schema(schema)
        json_schema = self.generate_inner(schema["schema"])
        value = factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            # A nested object defaults to {} and the API server fills in its own defaults;
            # factories that set values (e.g. resources) keep them.
            value = value.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        json_schema["default"] = to_jsonable_python(value)
        return json_schema

    def function_after_schema(
        self, schema: core_schema.AfterValidatorFunctionSchema
    ) -> JsonSchemaValue:
        json_schema = super().function_after_schema(schema)
        if schema["function"].get("function") is common._check_cidr:
            json_schema = {**json_schema, "format": "cidr"}
        return json_schema


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a pydantic model."""
    raw = model.model_json_schema(by_alias=True, schema_generator=_CrdJsonSchema)
    defs = raw.pop("$defs", {})
    return _structural(raw, defs)


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if node.get("x-kubernetes-int-or-string"):
        out: dict[str, Any] = {"x-kubernetes-int-or-string": True}
        if "description" in node:
            out["description"] = node["description"]
        return out
    any_of = node.pop("anyOf", None)
    if any_of is not None:
        options = [option for option in any_of if option.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {any_of} in a structural schema")
        node = {**options[0], **node}
        if node.get("default", 0) is None:
            del node["default"]  # optional: absent rather than null
    ref = node.pop("$ref", None)
    if ref is not None:
        target = copy.deepcopy(defs[ref.rsplit("/", 1)[-1]])
        node = {**target, **node}  # siblings of $ref (default, description) win
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]  # structural schemas prune unknown fields instead
    # JSON Schema 2020 (pydantic's gt/lt) gives a number; the API server's OpenAPI v3.0
    # schema wants the bound in minimum/maximum and exclusiveMinimum/Maximum as booleans.
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        value = node.get(exclusive)
        if isinstance(value, int | float) and not isinstance(value, bool):
            node[bound] = value
            node[exclusive] = True
    out = {}
    for key in sorted(node, key=_key_order):
        value = node[key]
        if key not in _KEEP:
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _structural(value, defs)
        elif key == "x-kubernetes-validations":
            out[key] = [dict(rule) for rule in value]
        else:
            out[key] = value
    if out.get("type") == "object" and not ({"properties", "additionalProperties"} & out.keys()):
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "conditions" in out.get("properties", {}):
        out["properties"]["conditions"]["x-kubernetes-list-type"] = "map"
        out["properties"]["conditions"]["x-kubernetes-list-map-keys"] = ["type"]
    return out


def _ready_columns() -> list[dict[str, Any]]:
    return [
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {
            "name": "Reason",
            "type": "string",
            "priority": 1,
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        },
    ]


def crd(kind: CrdKind) -> dict[str, Any]:
    """One CustomResourceDefinition as a plain dict."""
    root: dict[str, Any] = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": model_schema(kind.spec_model),
            "status": model_schema(kind.status_model),
        },
    }
    if kind.max_name_length is not None:
        root["x-kubernetes-validations"] = [
            {
                "rule": f"size(self.metadata.name) <= {kind.max_name_length}",
                "message": f"name must be at most {kind.max_name_length} characters "
                "(it prefixes the names of the objects made for it)",
            }
        ]
    columns = [
        *_ready_columns(),
        *kind.printer_columns,
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.resource.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "noctis", "app.kubernetes.io/part-of": "noctis"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.resource.kind,
                "listKind": f"{kind.resource.kind}List",
                "plural": kind.resource.plural,
                "singular": kind.resource.kind.lower(),
                "shortNames": list(kind.short_names),
                "categories": ["noctis"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def peering_crds() -> list[dict[str, Any]]:
    """kopf's peering resources: how operator replicas see each other (one is active)."""
    out = []
    for scope, kind in (("Cluster", "ClusterKopfPeering"), ("Namespaced", "KopfPeering")):
        plural = kind.lower() + "s"
        out.append(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.kopf.dev"},
                "spec": {
                    "group": "kopf.dev",
                    "scope": scope,
                    "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                    "versions": [
                        {
                            "name": "v1",
                            "served": True,
                            "storage": True,
                            "schema": {
                                "openAPIV3Schema": {
                                    "type": "object",
                                    "properties": {
                                        "status": {
                                            "type": "object",
                                            "x-kubernetes-preserve-unknown-fields": True,
                                        }
                                    },
                                }
                            },
                        }
                    ],
                },
            }
        )
    return out


HEADER = "# Generated by `python -m noctis.operator.crdgen` from the spec models: do not edit.\n"


def render_files() -> dict[str, str]:
    """File name -> YAML text, for every CRD the operator needs."""
    files = {
        f"{GROUP}_{kind.resource.plural}.yaml": HEADER + _dump(crd(kind)) for kind in CRD_KINDS
    }
    files["kopf.dev_peerings.yaml"] = HEADER + "---\n".join(_dump(c) for c in peering_crds())
    return files


def _dump(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=100)


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_files().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    targets = [Path(a) for a in args] or [Path("crds"), Path("charts/noctis/crds")]
    for target in targets:
        for path in write(target):
            print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
