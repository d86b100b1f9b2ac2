"""Images for the node: built with podman, exported as OCI archives, imported into its containerd.

Nothing can be pulled here, so every image a pod runs is built on this machine: the pod sandbox
(``pause/``) and the tests' probe target (``hello/``) are static C programs ``FROM scratch``,
tagged by a hash of their sources; the Noctis images come from ``scripts/build-images.sh``.
Archives are cached outside the repository (keyed by image ID), so a warm `up` only imports them.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from support.cluster.layout import Layout
from support.kube import REPO_ROOT, TestbedError, testbed_cache

HERE = Path(__file__).resolve().parent
NAMESPACE = "k8s.io"  # the CRI plugin's containerd namespace
IMAGES_SCRIPT = REPO_ROOT / "scripts" / "build-images.sh"


def _run(argv: list[str], **kwargs: object) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise TestbedError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr}")
    return str(result.stdout)


def image_id(ref: str) -> str | None:
    result = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", ref],
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() or None if result.returncode == 0 else None


def build_static_image(name: str) -> str:
    """``localhost/noctis-<name>:<hash>`` from ``<name>/<name>.c`` and ``<name>/Containerfile``.

    Built only when podman does not have that tag yet.
    """
    source_dir = HERE / name
    sources = [source_dir / f"{name}.c", source_dir / "Containerfile"]
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.read_bytes())
    digest.update(_run(["gcc", "--version"]).splitlines()[0].encode())
    ref = f"localhost/noctis-{name}:{digest.hexdigest()[:12]}"
    if image_id(ref):
        return ref
    with tempfile.TemporaryDirectory(prefix=f"noctis-{name}-") as context:
        _run(["gcc", "-static", "-Os", "-s", "-Wall", "-o", f"{context}/{name}", str(sources[0])])
        shutil.copy(sources[1], context)
        _run(["podman", "build", "--quiet", "--tag", ref, context])
    return ref


NOCTIS_COMPONENTS = ("operator", "scp", "worker", "api")
BACKING_SERVICES = {
    "postgres": "NOCTIS_POSTGRES_IMAGE",
    "redis": "NOCTIS_REDIS_IMAGE",
    "s3": "NOCTIS_S3_IMAGE",
}


def build_noctis_images() -> dict[str, str]:
    """The four Noctis images and the quickstart's backing services, by name -> ref.

    Built (or found cached) by ``scripts/build-images.sh``, whose stdout is shell assignments;
    without the script there are none.
    """
    if not IMAGES_SCRIPT.exists():
        return {}
    output = subprocess.run(
        [str(IMAGES_SCRIPT)], stdout=subprocess.PIPE, stderr=None, text=True, check=False
    )
    if output.returncode != 0:
        raise TestbedError(f"{IMAGES_SCRIPT} failed ({output.returncode}); see its output above")
    values = dict(line.split("=", 1) for line in output.stdout.splitlines() if "=" in line)
    registry, tag = values["NOCTIS_IMAGE_REGISTRY"], values["NOCTIS_IMAGE_TAG"]
    refs = {component: f"{registry}/noctis-{component}:{tag}" for component in NOCTIS_COMPONENTS}
    refs.update({name: values[key] for name, key in BACKING_SERVICES.items()})
    return refs


def _archive_dir() -> Path:
    return testbed_cache() / "image-archives"


def export_archive(ref: str) -> Path:
    """An OCI archive of ``ref``, cached by image ID; the archives of other tags or builds of
    the same image go (the node's image store keeps what it imported)."""
    identity = image_id(ref)
    if identity is None:
        raise TestbedError(f"podman has no image {ref}")
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", ref.removeprefix("localhost/"))
    directory = _archive_dir()
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / f"{stem}@{identity[:12]}.oci.tar"
    if not archive.exists():
        partial = archive.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        _run(["podman", "save", "--format", "oci-archive", "--output", str(partial), ref])
        partial.rename(archive)
        (directory / f"{stem}@{identity[:12]}.ref").write_text(ref)
    repository = stem.rsplit("_", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else stem
    current = archive.name.removesuffix(".oci.tar")
    for stale in directory.glob(f"{repository}_*@*"):
        if not stale.name.startswith(current):
            stale.unlink()
    return archive


def stage_archives(layout: Layout, refs: list[str]) -> None:
    """Name the archives the node must have; the supervisor imports them once containerd runs."""
    archives = {ref: str(export_archive(ref)) for ref in refs}
    layout.run.mkdir(parents=True, exist_ok=True)
    (layout.run / "images.json").write_text(json.dumps(archives, indent=2))


def import_archives(layout: Layout) -> list[str]:
    """Import every staged archive the node's image store does not hold yet, and drop the images
    of ours no longer staged (older tags); the refs imported."""
    staged_file = layout.run / "images.json"
    if not staged_file.exists():
        return []
    staged: dict[str, str] = json.loads(staged_file.read_text())
    record = layout.imported_record
    done: dict[str, str] = json.loads(record.read_text()) if record.exists() else {}
    present = set(_ctr(layout, "images", "list", "--quiet").split())
    imported = []
    for ref, archive in staged.items():
        if ref in present and done.get(ref) == archive:
            continue
        _ctr(layout, "images", "import", archive)
        if ref not in _ctr(layout, "images", "list", "--quiet").split():
            raise TestbedError(f"importing {archive} did not give containerd the image {ref}")
        done[ref] = archive
        record.write_text(json.dumps(done, indent=2))
        imported.append(ref)
    stale = _stale_images(layout, set(staged))
    if stale:
        _ctr(layout, "images", "remove", *stale)
        for ref in stale:
            done.pop(ref, None)
        record.write_text(json.dumps(done, indent=2))
    return imported


def _stale_images(layout: Layout, staged: set[str]) -> list[str]:
    """Our images (``localhost/noctis-*``) not staged any more, and the ``sha256:<id>`` aliases
    the CRI plugin keeps for them (an alias shares its image's manifest digest)."""
    rows = [line.split() for line in _ctr(layout, "images", "list").splitlines()[1:]]
    digests = {row[0]: row[2] for row in rows if len(row) > 2}
    kept = {d for ref, d in digests.items() if not ref.startswith("sha256:") and ref in staged}
    kept |= {
        d for ref, d in digests.items() if not ref.startswith(("sha256:", "localhost/noctis-"))
    }
    return [
        ref
        for ref, digest in digests.items()
        if (ref.startswith("localhost/noctis-") and ref not in staged)
        or (ref.startswith("sha256:") and digest not in kept)
    ]


def _ctr(layout: Layout, *args: str) -> str:
    return _run(
        ["ctr", "--address", str(layout.containerd_socket), "--namespace", NAMESPACE, *args]
    )
