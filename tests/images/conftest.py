"""The container images, built by scripts/build-images.sh with podman (cold: minutes; after
that only what changed is rebuilt, and an image whose tag exists is reused at once)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from support.containers import BuiltImages, build_images
from support.kube import ControlPlane, install_noctis_crds


@pytest.fixture(scope="session")
def images() -> BuiltImages:
    """The four Noctis images and the quickstart's backing services, built once a session."""
    started = time.monotonic()
    built = build_images()
    print(f"\nimages ready in {time.monotonic() - started:.1f} s (tag {built.tag})")
    return built


@pytest.fixture(scope="session")
def kube_crds(kube: ControlPlane) -> Iterator[ControlPlane]:
    """The session's control plane with the Noctis CRDs established."""
    install_noctis_crds(kube)
    yield kube
