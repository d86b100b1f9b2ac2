"""Fixtures for the SCP tests: an archive in each configuration, a running SCP, facilities.

`runtime` is parametrized: "embedded" (SQLite file + filesystem objects) and "production"
(PostgreSQL + S3). The SCP listens on 127.0.0.1 on a free port and is stopped when the test
ends. The facility "st-mary" has the AE titles tests call with:

- MODALITY: every service, from loopback;
- ECHOONLY: echo only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from scp_support import AE_TITLE, ECHO_ONLY, MODALITY, RunningScp

from noctis.core.ingest import FacilityRef
from noctis.core.runtime import Runtime
from noctis.scp.server import Scp
from support.archive import (
    embedded_settings,
    open_runtime,
    production_settings,
    register_facility,
)
from support.ports import LOOPBACK


@pytest.fixture(autouse=True)
def _quiet_pynetdicom() -> None:
    # pynetdicom logs every association at INFO; failures are what a test log should show.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


@pytest.fixture(params=["embedded", "production"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    if request.param == "production":
        pg_url = request.getfixturevalue("pg_url")
        s3_server = request.getfixturevalue("s3_server")
        s3_store = request.getfixturevalue("s3_store")
        settings = production_settings(
            tmp_path,
            pg_url,
            s3_endpoint=s3_server.endpoint,
            s3_bucket=s3_store.bucket,
            s3_access_key=s3_server.access_key,
            s3_secret_key=s3_server.secret_key,
            ae_title=AE_TITLE,
        )
        opened = open_runtime(settings, store=s3_store)
    else:
        opened = open_runtime(embedded_settings(tmp_path, ae_title=AE_TITLE))
    yield opened
    opened.close()


@pytest.fixture
def embedded_archive(tmp_path: Path) -> Iterator[Runtime]:
    """For tests about the SCP itself, where the backends do not matter."""
    opened = open_runtime(embedded_settings(tmp_path, ae_title=AE_TITLE))
    yield opened
    opened.close()


@pytest.fixture
def facility(runtime: Runtime) -> FacilityRef:
    return register_facility(
        runtime,
        "st-mary",
        [{"aeTitle": MODALITY}, {"aeTitle": ECHO_ONLY, "services": ["echo"]}],
    )


@pytest.fixture
def scp(runtime: Runtime, facility: FacilityRef) -> Iterator[RunningScp]:
    running = Scp(runtime, host=LOOPBACK, port=0).start()
    yield RunningScp(running, runtime)
    running.stop(timeout=5)
