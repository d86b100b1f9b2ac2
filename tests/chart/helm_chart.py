"""Render charts/noctis with the test bed's helm (`helm template`), as a list of dicts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from support.kube import testbed_cache, testbed_versions

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "noctis"
RELEASE = "noctis"
NAMESPACE = "pacs"


def helm_binary() -> str:
    built = testbed_cache() / f"helm-{testbed_versions()['HELM_VERSION']}" / "bin" / "helm"
    if os.access(built, os.X_OK):
        return str(built)
    found = shutil.which("helm")
    if found is None:
        raise RuntimeError(f"helm not found: build it with scripts/build-testbed.sh ({built})")
    return found


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": f"{home}/cache",
            "HELM_CONFIG_HOME": f"{home}/config",
            "HELM_DATA_HOME": f"{home}/data",
        }
        return subprocess.run(
            [helm_binary(), *args],
            capture_output=True,
            text=True,
            env=env,
            check=check,
            timeout=60,
        )


def render_text(values: dict[str, Any] | None = None, *, namespace: str = NAMESPACE) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        json.dump(values or {}, file)
        file.flush()
        result = helm("template", RELEASE, str(CHART), "--namespace", namespace, "-f", file.name)
    return result.stdout


def render_chart(
    values: dict[str, Any] | None = None,
    show_only: list[str] | None = None,
    *,
    namespace: str = NAMESPACE,
) -> list[dict[str, Any]]:
    """The rendered objects; ``show_only`` keeps those from these templates (paths in the chart)."""
    docs = []
    source = None
    for chunk in render_text(values, namespace=namespace).split("\n---"):
        for line in chunk.splitlines():
            if line.startswith("# Source: "):
                source = line.removeprefix("# Source: noctis/")
        doc = yaml.safe_load(chunk)
        if doc and (show_only is None or source in show_only):
            docs.append(doc)
    return docs
