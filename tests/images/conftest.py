"""The container images, built by scripts/build-images.sh with podman (cold: minutes; after
that only what changed is rebuilt, and an image whose tag exists is reused at once)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from support.containers import REPO_ROOT, BuiltImages, build_images
from support.kube import ControlPlane, wait_until

ESTABLISHED = '{.status.conditions[?(@.type=="Established")].status}'


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
    kube.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
    for crd in ("storagepools", "facilities", "archives", "dicomnodes", "kopfpeerings"):
        group = "kopf.dev" if crd == "kopfpeerings" else "pacs.noctis.io"
        wait_until(
            lambda name=f"crd/{crd}.{group}": (
                kube.kubectl("get", name, "-o", f"jsonpath={ESTABLISHED}", check=False).stdout
                == "True"
            ),
            30,
            f"CRD {crd}.{group} to be established",
        )
    yield kube
