"""Fetch the OHIF viewer: ``npm pack @ohif/app@<pinned>``, verify, extract ``dist/``.

    python -m noctis.api.viewer_fetch [--dest DIR] [--keep-ort] [--force]

The tarball's sha512 must equal both the registry's ``dist.integrity`` and the value pinned
in `noctis.api.viewer`; anything else is refused before a byte is extracted. Only
``package/dist/`` is extracted (regular files and directories, no links, no paths outside),
without ``ort/`` (136 MB of onnxruntime for OHIF's optional AI tools, loaded only when one
is used) unless asked. Text assets get a ``.gz`` twin so the bundle travels compressed.
The result lands atomically in the destination (default: a per-version cache outside the
repository) with a marker naming version and integrity; a matching marker means done.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from noctis.api.viewer_release import (
    MARKER,
    OHIF_INTEGRITY,
    OHIF_VERSION,
    app_config,
    default_viewer_dir,
)

PACKAGE = "@ohif/app"
DIST = PurePosixPath("package/dist")
OPTIONAL_DIRS = ("ort",)
COMPRESS_SUFFIXES = {".js", ".mjs", ".css", ".wasm", ".json", ".jsonc", ".svg", ".html"}
COMPRESS_MIN_BYTES = 2048


class ViewerFetchError(RuntimeError):
    pass


def sha512_integrity(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def _npm(*args: str, cwd: Path) -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise ViewerFetchError("npm is not installed (Debian: apt-get install npm)")
    result = subprocess.run(
        [npm, *args, "--no-fund", "--no-audit", "--loglevel=error"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise ViewerFetchError(f"npm {' '.join(args)} failed:\n{result.stderr.strip()}")
    return result.stdout


def registry_integrity(version: str, work: Path) -> str:
    out = _npm("view", f"{PACKAGE}@{version}", "dist.integrity", "--json", cwd=work)
    return str(json.loads(out))


def pack(version: str, work: Path) -> Path:
    out = _npm("pack", f"{PACKAGE}@{version}", "--json", "--pack-destination", str(work), cwd=work)
    return work / json.loads(out)[0]["filename"]


def extract_dist(tarball: Path, dest: Path, *, keep_optional: bool = False) -> int:
    """Extract package/dist/ into dest; the number of files written."""
    written = 0
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            path = PurePosixPath(member.name)
            if path.parts[:2] != DIST.parts or len(path.parts) <= 2:
                continue
            relative = PurePosixPath(*path.parts[2:])
            if ".." in relative.parts or relative.is_absolute():
                raise ViewerFetchError(f"unsafe path in tarball: {member.name}")
            if not keep_optional and relative.parts[0] in OPTIONAL_DIRS:
                continue
            target = dest.joinpath(*relative.parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None
                with source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                written += 1
            else:
                raise ViewerFetchError(f"unexpected link or device in tarball: {member.name}")
    return written


def precompress(root: Path) -> int:
    count = 0
    for path in root.rglob("*"):
        if not (path.suffix in COMPRESS_SUFFIXES and path.is_file()):
            continue
        if path.stat().st_size >= COMPRESS_MIN_BYTES:
            with path.open("rb") as src, gzip.open(f"{path}.gz", "wb", compresslevel=6) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            count += 1
    return count


def is_current(dest: Path, version: str, integrity: str) -> bool:
    try:
        marker = json.loads((dest / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (
        marker.get("version") == version
        and marker.get("integrity") == integrity
        and (dest / "index.html").is_file()
    )


def fetch_viewer(
    dest: Path | None = None,
    *,
    version: str = OHIF_VERSION,
    integrity: str = OHIF_INTEGRITY,
    keep_optional: bool = False,
    force: bool = False,
    log: bool = True,
) -> Path:
    """Make `dest` hold the verified OHIF build; returns `dest`."""
    dest = dest or default_viewer_dir()
    if not force and is_current(dest, version, integrity):
        if log:
            print(f"OHIF viewer {version} already in {dest}", file=sys.stderr)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="noctis-viewer-", dir=dest.parent) as tmp:
        work = Path(tmp)
        announced = registry_integrity(version, work)
        if announced != integrity:
            raise ViewerFetchError(
                f"{PACKAGE}@{version}: the registry announces {announced}, "
                f"Noctis pins {integrity}: refusing it"
            )
        tarball = pack(version, work)
        actual = sha512_integrity(tarball)
        if actual != integrity:
            raise ViewerFetchError(f"{tarball.name} has {actual}, expected {integrity}")
        staging = work / "dist"
        staging.mkdir()
        files = extract_dist(tarball, staging, keep_optional=keep_optional)
        if not (staging / "index.html").is_file():
            raise ViewerFetchError(f"{tarball.name} has no dist/index.html")
        (staging / "app-config.js").write_text(app_config())  # the route serves the same
        compressed = precompress(staging)
        marker = {
            "package": PACKAGE,
            "version": version,
            "integrity": integrity,
            "without": [] if keep_optional else list(OPTIONAL_DIRS),
        }
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    if log:
        print(
            f"OHIF viewer {version} verified ({integrity[:19]}...) and extracted to {dest}: "
            f"{files} files, {compressed} gzipped",
            file=sys.stderr,
        )
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, help=f"default: {default_viewer_dir()}")
    parser.add_argument("--keep-ort", action="store_true", help="keep dist/ort (136 MB)")
    parser.add_argument("--force", action="store_true", help="fetch even if up to date")
    args = parser.parse_args(argv)
    try:
        path = fetch_viewer(args.dest, keep_optional=args.keep_ort, force=args.force)
    except ViewerFetchError as exc:
        print(f"fetch-viewer: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
