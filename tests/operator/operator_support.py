"""Helpers for operator tests on a real control plane: a namespace with the operator in it."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from support.kube import ControlPlane
from support.s3 import SeaweedFS

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "noctis"
SERVICE_ACCOUNT = "noctis-operator"  # the chart's, for release name "noctis"


@dataclass
class Cluster:
    """One namespace with the chart installed and the operator running in it."""

    kube: ControlPlane
    namespace: str
    database_url: str
    s3: SeaweedFS
    liveness_url: str
    log: Path

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.kube.kubectl(*args, "--namespace", self.namespace, input=input,
                                 check=check).stdout

    def apply(self, doc: dict[str, Any] | str) -> str:
        text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
        return self.kubectl("apply", "-f", "-", input=text)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        out = self.kube.kubectl("get", kind, name, "-n", self.namespace, "-o", "json",
                                check=False)
        if out.returncode != 0:
            if "NotFound" in out.stderr:
                return None
            raise AssertionError(out.stderr)
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def condition(self, kind: str, name: str, type_: str = "Ready") -> dict[str, Any] | None:
        obj = self.get(kind, name) or {}
        for cond in (obj.get("status") or {}).get("conditions", []):
            if cond["type"] == type_:
                return cond  # type: ignore[no-any-return]
        return None

    def wait_condition(
        self, kind: str, name: str, status: str = "True", *, type_: str = "Ready",
        reason: str | None = None, timeout: float = 30,
    ) -> dict[str, Any]:
        def matches() -> dict[str, Any] | None:
            cond = self.condition(kind, name, type_)
            if cond and cond["status"] == status and (reason is None or cond["reason"] == reason):
                return cond
            return None

        return wait_for(matches, timeout, f"{kind}/{name} {type_}={status} {reason or ''}",
                        self.log)

    def events(self, name: str, reason: str | None = None) -> list[dict[str, Any]]:
        selector = f"involvedObject.name={name}" + (f",reason={reason}" if reason else "")
        out = self.kubectl("get", "events", "--field-selector", selector, "-o", "json")
        return list(json.loads(out)["items"])

    def operator_log(self) -> str:
        return self.log.read_text(errors="replace")


def wait_for(fn: Callable[[], Any], timeout: float, what: str, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result:
            return result
        if time.monotonic() > deadline:
            tail = ""
            if log is not None:
                tail = "\noperator log:\n" + "\n".join(log.read_text().splitlines()[-40:])
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")
        time.sleep(0.2)


def install_chart(kube: ControlPlane, namespace: str) -> None:
    rendered = kube.helm(
        "template", "noctis", str(CHART), "--namespace", namespace,
        "--set", "database.existingSecret=noctis-database",
    ).stdout
    kube.kubectl("apply", "--namespace", namespace, "-f", "-", input=rendered)


def secrets_yaml(s3: SeaweedFS, database_url: str) -> str:
    docs = list(yaml.safe_load_all((ROOT / "crds" / "examples" / "secrets.yaml").read_text()))
    for doc in docs:
        if doc["metadata"]["name"] == "noctis-s3":
            doc["stringData"] = {"accessKey": s3.access_key, "secretKey": s3.secret_key}
        if doc["metadata"]["name"] == "noctis-database":
            doc["stringData"] = {"url": database_url}
    return yaml.safe_dump_all(docs)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
