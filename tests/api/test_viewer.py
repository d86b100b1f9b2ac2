"""The viewer mount: login first, OHIF's files with the right types and caching, the SPA
fallback, our app-config.js, no shadowing of the API; and the verified fetch."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from noctis.api import viewer, viewer_fetch
from noctis.core.runtime import Runtime
from support.archive import embedded_settings, open_runtime
from support.web import auth_app, create_user, login, running

INLINE_SCRIPT = 'window.PUBLIC_URL="/"'  # OHIF's index.html has inline scripts like this
INDEX = (
    b"<!doctype html><title>OHIF</title><script>" + INLINE_SCRIPT.encode() + b"</script>"
    b"<script src=/app.bundle.0123456789abcdef.js></script>"
)


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    """A stand-in for OHIF's dist/ (the real one is exercised by the browser test)."""
    root = tmp_path / "viewer"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_bytes(INDEX)
    (root / "app.bundle.0123456789abcdef.js").write_text("console.log('ohif');" * 200)
    (root / "0ddf166f7a343eda.wasm").write_bytes(b"\0asm\x01\0\0\0")
    (root / "sw.js").write_text("// service worker")
    (root / "es6-shim.min.js").write_text("// shim")
    (root / "app-config.js").write_text("window.config = {}; // OHIF's own")
    (root / "assets" / "favicon.ico").write_bytes(b"\0\0\1\0")
    viewer_fetch.precompress(root)
    return root


@pytest.fixture
def runtime(tmp_path: Path, dist: Path) -> Iterator[Runtime]:
    runtime = open_runtime(embedded_settings(tmp_path, viewer_dir=dist), default_facility=True)
    yield runtime
    runtime.close()


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    app = auth_app(runtime)

    # Routes added after the viewer must still be reachable: it never shadows them.
    @app.get("/dicom-web/studies")
    def studies() -> list[str]:
        return ["late route"]

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


@pytest.fixture
def browser(runtime: Runtime, app: FastAPI) -> TestClient:
    client = TestClient(app)
    login(client, "rad", create_user(runtime, "rad", "radiologist"))
    return client


def test_pages_redirect_to_login_and_other_requests_get_401(app: FastAPI) -> None:
    anonymous = TestClient(app)
    page = anonymous.get(
        "/viewer?StudyInstanceUIDs=1.2.3",
        headers={"Accept": "text/html,application/xhtml+xml"},
        follow_redirects=False,
    )
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fviewer%3FStudyInstanceUIDs%3D1.2.3"
    assert anonymous.get("/app.bundle.0123456789abcdef.js").status_code == 401
    assert anonymous.get("/app-config.js").status_code == 401
    assert anonymous.get("/assets/favicon.ico").status_code == 200  # artwork only


def test_index_and_spa_routes(browser: TestClient) -> None:
    for path in ["/", "/viewer", "/viewer/dicomweb", "/segmentation", "/local"]:
        response = browser.get(path)
        assert response.status_code == 200, path
        assert response.content == INDEX
        assert response.headers["content-type"].startswith("text/html")
        assert response.headers["cache-control"] == "no-cache"
    assert browser.get("/missing.bundle.js").status_code == 404  # an asset, not a route


def test_media_types_and_caching(browser: TestClient) -> None:
    wasm = browser.get("/0ddf166f7a343eda.wasm")
    assert wasm.headers["content-type"] == "application/wasm"
    assert "immutable" in wasm.headers["cache-control"]
    bundle = browser.get("/app.bundle.0123456789abcdef.js")
    assert bundle.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "immutable" in bundle.headers["cache-control"]
    assert bundle.headers["content-encoding"] == "gzip"  # the precompressed twin
    assert bundle.text.startswith("console.log")  # the client inflates it
    plain = browser.get("/app.bundle.0123456789abcdef.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.text.startswith("console.log")
    assert browser.get("/sw.js").headers["cache-control"] == "no-cache"
    assert browser.get("/es6-shim.min.js").headers["cache-control"] == "private, max-age=3600"


def test_app_config_points_at_our_dicomweb(browser: TestClient) -> None:
    response = browser.get("/app-config.js")
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["cache-control"] == "no-cache"
    text = response.text
    assert "OHIF's own" not in text
    assert 'window.location.origin + "/dicom-web"' in text
    for setting in [
        '"imageRendering": "wadors"',
        '"thumbnailRendering": "wadors"',
        '"enableStudyLazyLoad": true',
        '"qidoSupportsIncludeField": true',
        '"supportsWildcard": true',
        '"supportsStow": true',
        '"enabled": true',
        'investigationalUseDialog: { option: "never" }',
        '"ohif.tours": { $set: [] }',
    ]:
        assert setting in text, setting


def test_api_prefixes_are_not_shadowed(browser: TestClient) -> None:
    assert browser.get("/dicom-web/studies").json() == ["late route"]
    assert browser.get("/healthz").json() == {"status": "ok"}
    assert browser.get("/api/me").json()["username"] == "rad"
    assert browser.get("/api/nothing-here").status_code == 404  # not the SPA's index.html
    assert browser.get("/docs").status_code == 200
    assert browser.get("/login", follow_redirects=False).status_code == 303  # logged in already


@pytest.mark.parametrize("path", ["/../index.sqlite3", "/%2e%2e/index.sqlite3", "/.noctis"])
def test_no_file_outside_the_build(browser: TestClient, path: str) -> None:
    response = browser.get(path)
    assert response.status_code in (200, 404)
    assert b"SQLite" not in response.content


def test_a_missing_viewer_says_how_to_fetch_it(tmp_path: Path) -> None:
    settings = embedded_settings(
        tmp_path,
        database_url=f"sqlite:///{tmp_path / 'other.sqlite3'}",
        viewer_dir=tmp_path / "absent",
    )
    runtime = open_runtime(settings, default_facility=True)
    try:
        client = TestClient(auth_app(runtime))
        login(client, "rad", create_user(runtime, "rad", "radiologist"))
        response = client.get("/")
        assert response.status_code == 503
        assert "scripts/fetch-viewer.sh" in response.text and "absent" in response.text
    finally:
        runtime.close()


# -- fetch -----------------------------------------------------------------------------------


def _tarball(path: Path, members: dict[str, bytes], link: str | None = None) -> str:
    with tarfile.open(path, "w:gz") as tarball:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tarball.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tarball.addfile(info)
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


FAKE_PACKAGE = {
    "package/package.json": b"{}",
    "package/dist/index.html": INDEX,
    "package/dist/app.bundle.0123456789abcdef.js": b"x" * 5000,
    "package/dist/ort/ort-wasm.wasm": b"\0asm" * 1000,
}


@pytest.fixture
def fake_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """npm view / npm pack replaced by a local tarball; returns what the registry says."""
    tarball = tmp_path / "ohif-app-9.9.9.tgz"
    registry = {"integrity": _tarball(tarball, FAKE_PACKAGE)}

    def pack(version: str, work: Path) -> Path:
        copy = work / tarball.name
        copy.write_bytes(tarball.read_bytes())
        return copy

    monkeypatch.setattr(viewer_fetch, "registry_integrity", lambda v, w: registry["integrity"])
    monkeypatch.setattr(viewer_fetch, "pack", pack)
    return registry


def test_fetch_verifies_extracts_dist_without_ort_and_is_idempotent(
    tmp_path: Path, fake_registry: dict[str, str]
) -> None:
    dest = tmp_path / "cache" / "ohif-9.9.9"
    integrity = fake_registry["integrity"]
    viewer_fetch.fetch_viewer(dest, version="9.9.9", integrity=integrity, log=False)
    assert (dest / "index.html").read_bytes() == INDEX
    assert not (dest / "ort").exists() and not (dest / "package.json").exists()
    assert gzip.decompress((dest / "app.bundle.0123456789abcdef.js.gz").read_bytes()) == b"x" * 5000
    assert "/dicom-web" in (dest / "app-config.js").read_text()
    marker = json.loads((dest / viewer.MARKER).read_text())
    assert marker["version"] == "9.9.9" and marker["integrity"] == integrity
    assert viewer_fetch.is_current(dest, "9.9.9", integrity)
    (dest / "index.html").write_text("kept")  # a second run with the same pin does nothing
    viewer_fetch.fetch_viewer(dest, version="9.9.9", integrity=integrity, log=False)
    assert (dest / "index.html").read_text() == "kept"


def test_fetch_refuses_a_tarball_that_is_not_the_pinned_one(
    tmp_path: Path, fake_registry: dict[str, str]
) -> None:
    dest = tmp_path / "cache" / "ohif"
    pinned = "sha512-" + base64.b64encode(hashlib.sha512(b"other").digest()).decode()
    with pytest.raises(viewer_fetch.ViewerFetchError, match="refusing"):
        viewer_fetch.fetch_viewer(dest, version="9.9.9", integrity=pinned, log=False)
    fake_registry["integrity"] = pinned  # the registry agrees with the pin; the file does not
    with pytest.raises(viewer_fetch.ViewerFetchError, match="expected"):
        viewer_fetch.fetch_viewer(dest, version="9.9.9", integrity=pinned, log=False)
    assert not dest.exists()


def test_extract_refuses_links_and_escapes(tmp_path: Path) -> None:
    linked = tmp_path / "linked.tgz"
    _tarball(linked, {"package/dist/index.html": INDEX}, link="package/dist/passwd")
    with pytest.raises(viewer_fetch.ViewerFetchError, match="link"):
        viewer_fetch.extract_dist(linked, tmp_path / "a")
    escaping = tmp_path / "escaping.tgz"
    _tarball(escaping, {"package/dist/../../evil.js": b"x"})
    with pytest.raises(viewer_fetch.ViewerFetchError, match="unsafe"):
        viewer_fetch.extract_dist(escaping, tmp_path / "b")
    assert not (tmp_path / "evil.js").exists()


def test_the_pinned_build_is_what_the_cache_holds() -> None:
    """The default cache (scripts/fetch-viewer.sh) holds the pinned, verified build."""
    root = viewer.default_viewer_dir()
    if not (root / "index.html").is_file():
        pytest.fail(f"the viewer is not fetched into {root}: run scripts/fetch-viewer.sh")
    assert viewer_fetch.is_current(root, viewer.OHIF_VERSION, viewer.OHIF_INTEGRITY)
    assert not (root / "ort").exists()


def test_dotted_viewer_routes_still_get_the_app(browser: TestClient) -> None:
    assert browser.get("/viewer/1.2.840.10008").content == INDEX  # a route, not a file
    assert browser.get("/missing.css").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/assets/../index.html",
        "/assets/%2e%2e/index.html",
        "/assets/%2E%2E/app-config.js",
        "/assets/..%2fapp.bundle.0123456789abcdef.js",
        "//assets/../sw.js",
        "/assets//..//index.html",
        "/assets/./../../assets/../es6-shim.min.js",
        "/assets/no-such-file",  # public as a file: never the app page instead
    ],
)
def test_viewer_files_are_not_public_through_dotted_paths(
    runtime: Runtime, app: FastAPI, path: str
) -> None:
    """Sent as written (no client-side normalisation) to the real server, without a login:
    only what is really under /assets/ is public."""
    with running(app) as base:
        connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=10)
        connection.request("GET", path)
        answer = connection.getresponse()
        body = answer.read()
        connection.close()
        assert httpx.get(f"{base}/assets/favicon.ico").status_code == 200  # still public
    assert answer.status in (401, 404), (path, answer.status)
    assert b"OHIF" not in body and b"window.config" not in body and b"console" not in body


def test_viewer_pages_may_not_be_framed_and_let_ohif_run(browser: TestClient) -> None:
    page = browser.get("/viewer")
    policy = dict(
        part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";")
    )
    assert policy["frame-ancestors"] == "'none'" and page.headers["x-frame-options"] == "DENY"
    inline = base64.b64encode(hashlib.sha256(INLINE_SCRIPT.encode()).digest()).decode()
    assert policy["script-src"].split() == ["'self'", "'wasm-unsafe-eval'", f"'sha256-{inline}'"]
    assert "blob:" in policy["worker-src"] and "data:" in policy["img-src"]
    assert policy["object-src"] == "'none'" and policy["connect-src"].startswith("'self'")
    # A worker runs under the policy its own script is served with: OHIF's decoders (wasm
    # with emscripten's embind) need eval there, and only there.
    worker = browser.get("/app.bundle.0123456789abcdef.js").headers["content-security-policy"]
    assert "script-src 'self' 'wasm-unsafe-eval' 'unsafe-eval'" in worker
    assert "frame-ancestors 'none'" in worker
