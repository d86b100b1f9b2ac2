"""Fixtures for the web API tests: an embedded archive with two facilities, users with real
API tokens (tests/support/web.py), in-process and live (uvicorn) servers, and DICOM files.

Helpers for building studies, STOW bodies and reading multipart responses come through the
``dw`` fixture. Facilities: ``north`` and ``south``. Users (all with a bearer token in ``tokens``):
``rad_north`` (radiologist, north), ``rad_south`` (radiologist, south), ``ref_north``
(referring physician, read-only, north), ``admin`` (administrator, every facility).
"""

from __future__ import annotations

import io
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from noctis.api.app import create_app
from noctis.core.queue import NullQueue
from noctis.core.runtime import Runtime
from noctis.index.migrate import upgrade
from noctis.index.models import Facility
from noctis.settings import Settings
from support.archive import embedded_settings, open_runtime
from support.web import client_for, create_user, running, token_for

FACILITIES = ("north", "south")
USERS = {
    "rad_north": ("radiologist", ["north"]),
    "rad_south": ("radiologist", ["south"]),
    "ref_north": ("referring-physician", ["north"]),
    "admin": ("admin", []),
}
# pydicom test files in several transfer syntaxes (all with pixel data).
SAMPLE_FILES = {
    "explicit": "CT_small.dcm",  # explicit VR little endian, 16-bit CT
    "implicit": "MR_small_implicit.dcm",
    "big_endian": "MR_small_bigendian.dcm",
    "jpeg_baseline": "SC_rgb_jpeg_dcmtk.dcm",
    "jpeg_lossless": "JPGLosslessP14SV1_1s_1f_8b.dcm",
    "jpeg2000": "MR_small_jp2klossless.dcm",
    "jpeg_ls": "MR_small_jpeg_ls_lossless.dcm",
    "rle": "MR_small_RLE.dcm",
    "deflate": "image_dfl.dcm",
    "multiframe": "emri_small.dcm",  # 10 frames, native
    "multiframe_rle": "emri_small_RLE.dcm",
}


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    return Settings(mode="embedded", data_dir=data_dir, **overrides)  # type: ignore[arg-type]


def prepare_archive(settings: Settings) -> Runtime:
    """Migrate the index and add the test facilities; tasks are dropped (no worker here)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url())
    runtime = Runtime.open(settings, queue=NullQueue())
    with runtime.sessions.begin() as session:
        for name in FACILITIES:
            session.add(Facility(name=name, display_name=name.title()))
    return runtime


@dataclass(frozen=True)
class Template:
    """A migrated index with the facilities and users, built once and copied per test
    (password hashing makes users slow to create)."""

    index: Path
    tokens: dict[str, str]


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    settings = make_settings(tmp_path_factory.mktemp("template"))
    runtime = prepare_archive(settings)
    tokens = {}
    for username, (role, facilities) in USERS.items():
        create_user(runtime, username, role, facilities)
        tokens[username] = token_for(runtime, username)
    runtime.close()
    return Template(Path(settings.resolved_database_url().removeprefix("sqlite:///")), tokens)


@pytest.fixture
def settings(tmp_path: Path, template: Template) -> Settings:
    settings = make_settings(tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    shutil.copyfile(template.index, settings.data_dir / template.index.name)
    return settings


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime.open(settings, queue=NullQueue())
    yield runtime
    runtime.close()


@pytest.fixture(params=["sqlite", "postgres"])
def accounts_archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    """An archive with only the default facility and no user, on SQLite and on PostgreSQL:
    for the tests of accounts, login and audit (which make their own)."""
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    runtime = open_runtime(embedded_settings(tmp_path, database_url=url), default_facility=True)
    yield runtime
    runtime.close()


@pytest.fixture
def tokens(template: Template) -> dict[str, str]:
    """A bearer token per test user."""
    return template.tokens


@pytest.fixture
def app(settings: Settings, runtime: Runtime) -> FastAPI:
    return create_app(settings, runtime)


@dataclass
class Clients:
    app: FastAPI
    tokens: dict[str, str]

    def __call__(self, username: str | None) -> httpx.Client:
        return client_for(self.app, self.tokens[username] if username else None)


@pytest.fixture
def clients(app: FastAPI, tokens: dict[str, str]) -> Clients:
    """``clients("rad_north")``: an in-process client acting as that user (None: anonymous)."""
    return Clients(app, tokens)


@pytest.fixture
def live_server(app: FastAPI) -> Iterator[str]:
    """The app under uvicorn on a loopback port; its base URL."""
    with running(app) as base_url:
        yield base_url


def sample_bytes(kind: str, **changes: str) -> bytes:
    """A pydicom test file, optionally with attributes changed (e.g. new UIDs)."""
    path = get_testdata_file(SAMPLE_FILES.get(kind, kind))
    assert path is not None, kind
    if not changes:
        return Path(path).read_bytes()
    ds = dcmread(path)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@dataclass
class Study:
    """A study of freshly generated UIDs whose instances are pydicom test files."""

    study_uid: str
    patient_id: str
    files: dict[str, bytes]  # SOP Instance UID -> the exact bytes sent
    series: dict[str, str]  # SOP Instance UID -> Series Instance UID
    syntaxes: dict[str, str]  # SOP Instance UID -> transfer syntax


def build_study(
    kinds: list[str], *, patient_name: str = "Doe^Jane", patient_id: str | None = None, **extra: str
) -> Study:
    study_uid = generate_uid()
    patient_id = patient_id or f"P{uuid.uuid4().hex[:8]}"
    files, series, syntaxes = {}, {}, {}
    for index, kind in enumerate(kinds):
        sop_uid, series_uid = generate_uid(), generate_uid()
        data = sample_bytes(
            kind,
            StudyInstanceUID=study_uid,
            SeriesInstanceUID=series_uid,
            SOPInstanceUID=sop_uid,
            PatientName=patient_name,
            PatientID=patient_id,
            SeriesNumber=str(index + 1),
            **extra,
        )
        files[sop_uid] = data
        series[sop_uid] = series_uid
        syntaxes[sop_uid] = str(
            dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID
        )
    return Study(study_uid, patient_id, files, series, syntaxes)


def multipart_body(parts: list[bytes], boundary: str = "noctis-test-boundary") -> tuple[bytes, str]:
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
        for p in parts
    )
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow(
    client: httpx.Client, parts: list[bytes], *, study: str | None = None, **params: str
) -> httpx.Response:
    body, content_type = multipart_body(parts)
    url = "/dicom-web/studies" + (f"/{study}" if study else "")
    return client.post(url, content=body, headers={"Content-Type": content_type}, params=params)


def split_multipart(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """Parts of a multipart response as (headers, body), checking the framing strictly."""
    content_type = response.headers["content-type"]
    assert content_type.startswith("multipart/related"), content_type
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"')
    body = response.content
    assert body.startswith(f"--{boundary}\r\n".encode()), body[:80]
    assert body.rstrip(b"\r\n").endswith(f"--{boundary}--".encode())
    chunks = body.split(f"--{boundary}".encode())
    parts = []
    for chunk in chunks[1:-1]:
        assert chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n")
        head, _, payload = chunk[2:-2].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            headers[name] = value.strip()
        parts.append((headers, payload))
    return parts


class Helpers:
    """The helpers above, for tests (a conftest is not imported by name)."""

    sample_bytes = staticmethod(sample_bytes)
    build_study = staticmethod(build_study)
    multipart_body = staticmethod(multipart_body)
    stow = staticmethod(stow)
    split_multipart = staticmethod(split_multipart)


@pytest.fixture
def dw() -> type[Helpers]:
    """DICOM helpers: ``dw.build_study([...])``, ``dw.stow(client, parts)``, ..."""
    return Helpers
