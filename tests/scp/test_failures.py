"""Backends failing in the middle of a C-STORE: the sender gets "out of resources" (A700,
try again later), and the archive keeps neither a half-indexed instance nor an orphan object.

The failure is injected at the exact point that matters, inside the store path of the running
SCP: S3 goes down as the object is about to be written; PostgreSQL goes down just after the
object was written and before the index transaction.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from scp_support import AE_TITLE, MODALITY, RunningScp, identifier

from noctis.core.probes import HealthServer
from noctis.index.postgresql import PING_AFTER_IDLE_SECONDS
from noctis.scp import status
from noctis.scp.client import store_files
from support.archive import index_counts, stored_object_keys
from support.dicomdata import generate_ct_series
from support.ports import LOOPBACK

pytestmark = pytest.mark.parametrize("runtime", ["production"], indirect=True)

EMPTY = {"patient": 0, "study": 0, "series": 0, "instance": 0}


class FailingPut:
    """Wraps the store's put: runs ``before`` or ``after`` the real put, once."""

    def __init__(self, store: Any, *, before: Any = None, after: Any = None) -> None:
        self.store, self.real_put = store, store.put
        self.before, self.after = before, after
        self.calls = 0

    def __call__(self, key: str, stream: BinaryIO, length: int) -> None:
        self.calls += 1
        if self.calls == 1 and self.before:
            self.before()
        self.real_put(key, stream, length)
        if self.calls == 1 and self.after:
            self.after()


def test_s3_down_mid_store(scp: RunningScp, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    s3 = request.getfixturevalue("s3_server")
    store = scp.runtime.store
    store.put = FailingPut(store, before=s3.down)  # type: ignore[method-assign]
    files = generate_ct_series(tmp_path / "ct", slices=2, size=32)
    try:
        report = store_files(LOOPBACK, scp.port, files[:1], AE_TITLE, MODALITY)
    finally:
        s3.up()
    assert report.statuses == {files[0]: status.OUT_OF_RESOURCES}
    assert "object store unavailable" in report.failures[0][1]
    assert index_counts(scp.runtime) == EMPTY
    assert stored_object_keys(store) == set()
    # S3 is back: the modality's retry succeeds.
    assert store_files(LOOPBACK, scp.port, files, AE_TITLE, MODALITY).succeeded == 2


def test_postgres_down_mid_store(
    scp: RunningScp, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    postgres = request.getfixturevalue("postgres")
    store = scp.runtime.store
    store.put = FailingPut(store, after=postgres.down)  # type: ignore[method-assign]
    files = generate_ct_series(tmp_path / "ct", slices=2, size=32)
    try:
        report = store_files(LOOPBACK, scp.port, files[:1], AE_TITLE, MODALITY)
    finally:
        postgres.up()
    assert report.statuses == {files[0]: status.OUT_OF_RESOURCES}
    assert "index unavailable" in report.failures[0][1]
    assert index_counts(scp.runtime) == EMPTY
    assert stored_object_keys(store) == set()  # the object written before the failure is gone
    assert store_files(LOOPBACK, scp.port, files, AE_TITLE, MODALITY).succeeded == 2
    assert index_counts(scp.runtime)["instance"] == 2


def test_a_postgres_restart_while_idle_costs_no_store(
    scp: RunningScp, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Pooled connections that a restart cut are found dead before they are used (pinged after
    an idle second), so the next store after a quiet restart just works."""
    postgres = request.getfixturevalue("postgres")
    files = generate_ct_series(tmp_path / "ct", slices=3, size=32)
    assert store_files(LOOPBACK, scp.port, files[:1], AE_TITLE, MODALITY).succeeded == 1
    postgres.down()
    postgres.up()
    time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)  # the timer under test: the pool goes idle
    report = store_files(LOOPBACK, scp.port, files[1:], AE_TITLE, MODALITY)
    assert report.failures == []
    assert index_counts(scp.runtime)["instance"] == 3


def test_find_with_the_index_down(scp: RunningScp, request: pytest.FixtureRequest) -> None:
    postgres = request.getfixturevalue("postgres")
    ae = AE(ae_title=MODALITY)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(LOOPBACK, scp.port, ae_title=AE_TITLE)  # the registry answers
    assert assoc.is_established
    try:
        with postgres.offline():
            answers = assoc.send_c_find(
                identifier("STUDY", StudyInstanceUID=""), StudyRootQueryRetrieveInformationModelFind
            )
            codes = [int(rsp.Status) for rsp, _ in answers if "Status" in rsp]
    finally:
        assoc.release()
    assert codes == [status.OUT_OF_RESOURCES]


def test_readiness_follows_the_backends(scp: RunningScp, request: pytest.FixtureRequest) -> None:
    import json
    import urllib.error
    import urllib.request

    from noctis.scp.metrics import exposition

    health = HealthServer(
        LOOPBACK,
        0,
        alive=lambda: scp.scp.serving,
        ready=scp.runtime.readiness,
        metrics=exposition,
    ).start()

    def readyz() -> tuple[int, dict[str, str]]:
        url = f"http://{LOOPBACK}:{health.port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    try:
        assert readyz() == (200, {"index": "ok", "objects": "ok"})
        with request.getfixturevalue("s3_server").offline():
            code, report = readyz()
            assert code == 503 and report["index"] == "ok" and report["objects"] != "ok"
        with request.getfixturevalue("postgres").offline():
            code, report = readyz()
            assert code == 503 and report["index"] != "ok"
        assert readyz()[0] == 200
    finally:
        health.stop()
