"""Helpers for operator tests on a real control plane: a namespace with the operator in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from minio.deleteobjects import DeleteObject

from support import log_tail, wait
from support.kube import ControlPlane
from support.logs import ServerLogs
from support.ports import free_ports
from support.s3 import SeaweedFS

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "noctis"
SERVICE_ACCOUNT = "noctis-operator"  # the chart's, for release name "noctis"
# What `noctis operator` does, with the log at INFO for the test's record.
OPERATOR_MAIN = (
    "import logging; logging.basicConfig(level=logging.INFO, "
    "format='%(asctime)s %(name)s %(levelname)s %(message)s'); "
    "from noctis.operator.main import run; run()"
)


@dataclass
class OperatorProcess:
    """`noctis operator` in a subprocess, as the chart's ServiceAccount, logging to a file."""

    process: subprocess.Popen[bytes]
    log: Path
    liveness_url: str
    metrics_url: str

    @classmethod
    def start(
        cls, kubeconfig: Path, namespace: str, database_url: str, log: Path, **extra: str
    ) -> OperatorProcess:
        port, metrics_port = free_ports(2)
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "NOCTIS_DATABASE_URL": database_url,
            "NOCTIS_OPERATOR_NAMESPACES": namespace,
            "NOCTIS_OPERATOR_PEERING": "noctis",
            "NOCTIS_OPERATOR_LIVENESS_HOST": "127.0.0.1",
            "NOCTIS_OPERATOR_LIVENESS_PORT": str(port),
            "NOCTIS_OPERATOR_USAGE_INTERVAL": "2",
            "NOCTIS_OPERATOR_FACILITY_INTERVAL": "2",
            "NOCTIS_OPERATOR_ROUTE_INTERVAL": "2",
            "NOCTIS_OPERATOR_RETRY_DELAY": "2",
            "NOCTIS_OPERATOR_SCALE_INTERVAL": "1",
            "NOCTIS_OPERATOR_METRICS_HOST": "127.0.0.1",
            "NOCTIS_OPERATOR_METRICS_PORT": str(metrics_port),
            **extra,
        }
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-c", OPERATOR_MAIN],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        started = cls(
            process,
            log,
            f"http://127.0.0.1:{port}/healthz",
            f"http://127.0.0.1:{metrics_port}/metrics",
        )
        wait.until(
            lambda: http_ok(started.liveness_url) or process.poll() is not None,
            timeout=60,
            what="the operator's liveness endpoint",
            context=operator_log_tail(log),
            interval=0.2,
        )
        assert process.poll() is None, log.read_text()
        return started

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Cluster:
    """One namespace with the chart installed and the operator running in it."""

    kube: ControlPlane
    namespace: str
    database_url: str
    s3: SeaweedFS
    kubeconfig: Path
    workdir: Path
    operator: OperatorProcess | None = None
    extra_operators: list[OperatorProcess] = field(default_factory=list)
    server_logs: ServerLogs | None = None  # where each operator's log is registered

    @property
    def log(self) -> Path:
        assert self.operator is not None
        return self.operator.log

    @property
    def liveness_url(self) -> str:
        assert self.operator is not None
        return self.operator.liveness_url

    def start_operator(self, name: str, **extra: str) -> OperatorProcess:
        log = self.workdir / f"operator-{name}.log"
        if self.server_logs is not None:
            self.server_logs.watch(f"noctis operator {name!r} of {self.namespace}", log)
        started = OperatorProcess.start(
            self.kubeconfig, self.namespace, self.database_url, log, **extra
        )
        if self.operator is None:
            self.operator = started
        else:
            self.extra_operators.append(started)
        return started

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.kube.kubectl(
            *args, "--namespace", self.namespace, input=input, check=check
        ).stdout

    def apply(self, doc: dict[str, Any] | str) -> str:
        text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
        return self.kubectl("apply", "-f", "-", input=text)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        out = self.kube.kubectl("get", kind, name, "-n", self.namespace, "-o", "json", check=False)
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
        self,
        kind: str,
        name: str,
        status: str = "True",
        *,
        type_: str = "Ready",
        reason: str | None = None,
        timeout: float = 30,
    ) -> dict[str, Any]:
        def matches() -> dict[str, Any] | None:
            cond = self.condition(kind, name, type_)
            if cond and cond["status"] == status and (reason is None or cond["reason"] == reason):
                return cond
            return None

        return wait.until(
            matches,
            timeout=timeout,
            what=f"{kind}/{name} {type_}={status} {reason or ''}",
            context=operator_log_tail(self.log),
            interval=0.2,
        )

    def events(self, name: str, reason: str | None = None) -> list[dict[str, Any]]:
        selector = f"involvedObject.name={name}" + (f",reason={reason}" if reason else "")
        out = self.kubectl("get", "events", "--field-selector", selector, "-o", "json")
        return list(json.loads(out)["items"])

    def stop_operators(self) -> None:
        """Stop every operator this namespace started; fail if any met an RBAC refusal."""
        for running in [*self.extra_operators, self.operator]:
            if running is not None:
                running.stop()
        forbidden = [
            line
            for line in self.operator_log().splitlines()
            if " 403" in line or "Forbidden" in line
        ]
        assert not forbidden, "the operator hit RBAC refusals:\n" + "\n".join(forbidden[:10])

    def operator_log(self) -> str:
        operators = [self.operator, *self.extra_operators]
        return "\n".join(o.text() for o in operators if o is not None)


def operator_log_tail(log: Path) -> Callable[[], str]:
    """For ``wait.until(context=...)``: the operator log's last lines when a wait times out."""
    return lambda: "operator log:\n" + log_tail(log)


def remove_buckets(s3: SeaweedFS, prefix: str) -> None:
    """Remove every bucket whose name starts with ``prefix``, with all its versions (GOVERNANCE
    retention bypassed). SeaweedFS has a fixed number of volumes, one per bucket: a session
    that left its test buckets behind would run out. A bucket under COMPLIANCE retention
    cannot go; it goes with the server."""
    client = s3.client()
    for bucket in client.list_buckets():
        if not bucket.name.startswith(prefix):
            continue
        versions = client.list_objects(bucket.name, recursive=True, include_version=True)
        deletes = [DeleteObject(o.object_name, o.version_id) for o in versions]
        if not list(client.remove_objects(bucket.name, deletes, bypass_governance_mode=True)):
            client.remove_bucket(bucket.name)


def install_chart(kube: ControlPlane, namespace: str, *values: str) -> None:
    """The chart rendered for release "noctis" in ``namespace`` and applied; ``values`` are
    more ``--set`` assignments."""
    sets = [arg for value in values for arg in ("--set", value)]
    rendered = kube.helm(
        "template",
        "noctis",
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "database.existingSecret=noctis-database",
        *sets,
    ).stdout
    # Objects of other watched namespaces (their RoleBindings) go in with their own.
    by_namespace: dict[str, list[Any]] = {}
    for doc in yaml.safe_load_all(rendered):
        if doc:
            where = doc["metadata"].get("namespace") or namespace
            by_namespace.setdefault(where, []).append(doc)
    for where, docs in by_namespace.items():
        kube.kubectl("apply", "--namespace", where, "-f", "-", input=yaml.safe_dump_all(docs))


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
