"""Fixtures for tests against a real Kubernetes control plane (see tests/support/kube.py).

The binaries are built once with `scripts/build-testbed.sh`; without them these tests fail with
a message saying so. Deselect them with `pytest -m "not kube"`.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    from support.kube import ControlPlane, start_control_plane
except ModuleNotFoundError:  # tests/ is not on sys.path yet (no tests/conftest.py)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from support.kube import ControlPlane, start_control_plane


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kube: needs the Kubernetes test bed (scripts/build-testbed.sh)"
    )


@pytest.fixture(scope="session")
def kube() -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager on loopback, shared by the session."""
    started = time.monotonic()
    plane = start_control_plane()
    print(f"\nKubernetes control plane ready in {time.monotonic() - started:.1f} s")
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def kube_namespace(kube: ControlPlane) -> Iterator[str]:
    """A fresh namespace for one test, deleted (asynchronously) afterwards."""
    name = f"test-{secrets.token_hex(4)}"
    kube.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kube.kubectl("delete", "namespace", name, "--wait=false", check=False)
