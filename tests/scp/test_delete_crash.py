"""A deletion interrupted by kill -9 of a real `noctis serve`: after a restart every object
of the study is gone and nothing of it is visible (QIDO, WADO, C-FIND with dcmtk, C-GET with
dcmtk); the same instances sent again are stored again."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
from pydicom import dcmread
from sqlalchemy import select

from noctis.core.runtime import Runtime
from noctis.index.deletion import Tombstone
from noctis.index.models import Instance
from noctis.settings import Settings
from support import dcmtk, wait
from support.dicomdata import generate_ct_series
from support.logs import ServerLogs
from support.serve import EmbeddedServe
from support.web import token_for

INSTANCES = 400
LEASE_SECONDS = 3


def _objects(data_dir: Path, study: str) -> list[Path]:
    return [p for p in (data_dir / "objects").glob(f"*/{study}/**/*") if p.is_file()]


def _tombstones(runtime: Runtime) -> int:
    with runtime.reader() as session:  # a session per look: each sees the latest commit
        return len(session.scalars(select(Tombstone.id)).all())


def test_kill_9_mid_delete_leaves_nothing_behind(tmp_path: Path, server_logs: ServerLogs) -> None:
    files = generate_ct_series(tmp_path / "ct", slices=INSTANCES, size=32)
    study = str(dcmread(files[0]).StudyInstanceUID)
    serve = EmbeddedServe(
        tmp_path,
        server_logs,
        env={
            "NOCTIS_DELETION_SWEEP_SECONDS": "0.5",
            "NOCTIS_DELETION_SWEEP_LEASE_SECONDS": str(LEASE_SECONDS),
        },
    ).start()
    runtime = Runtime.open(Settings(mode="embedded", data_dir=serve.data_dir))
    try:
        sent = dcmtk.storescu(serve.port, files, calling="CT1", called="NOCTIS", timeout=300)
        assert sent.ok, sent.output
        assert len(_objects(serve.data_dir, study)) == INSTANCES
        token = token_for(runtime, "admin")
        web = httpx.Client(
            base_url=serve.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

        [series_dir] = {p.parent for p in _objects(serve.data_dir, study)}
        response = web.delete(f"/dicom-web/studies/{study}")
        assert response.status_code == 204
        # Kill as soon as the sweep kicked by the deletion has removed its first objects.
        wait.until(
            lambda: len(os.listdir(series_dir)) < INSTANCES,
            timeout=30,
            what="the sweep to start",
            interval=0.0005,
        )
        serve.kill()

        left_at_kill = len(_objects(serve.data_dir, study))
        with runtime.reader() as session:
            assert session.scalars(select(Instance.id).limit(1)).first() is None
        tombstones = _tombstones(runtime)
        # The kill landed mid-sweep: some objects gone, the others (and their tombstones) left.
        assert 0 < left_at_kill < INSTANCES
        assert tombstones >= left_at_kill

        serve.start()
        # A claim held by the killed sweep expires after its lease; then the periodic sweep
        # finishes the work.
        wait.until(
            lambda: not _objects(serve.data_dir, study),
            timeout=LEASE_SECONDS + 30,
            what="the sweep after the restart",
        )
        wait.until(lambda: not _tombstones(runtime), timeout=10, what="the tombstones to go")
        assert web.get("/dicom-web/studies", params={"StudyInstanceUID": study}).json() == []
        assert web.get(f"/dicom-web/studies/{study}/metadata").status_code == 404
        found = dcmtk.findscu(
            serve.port,
            {"StudyInstanceUID": study, "PatientName": ""},
            level="STUDY",
            calling="CT1",
            called="NOCTIS",
            workdir=tmp_path,
        )
        assert found.ok and found.responses == []
        got = dcmtk.getscu(
            serve.port,
            {"StudyInstanceUID": study},
            level="STUDY",
            calling="CT1",
            called="NOCTIS",
            output_dir=tmp_path / "got",
        )
        assert list((tmp_path / "got").iterdir()) == []
        assert dcmtk.suboperation_counts(got.output).get("completed", 0) == 0

        # The SOP Instance UIDs are free again: sent again, stored again.
        again = dcmtk.storescu(serve.port, files[:10], calling="CT1", called="NOCTIS")
        assert again.ok, again.output
        assert len(web.get(f"/dicom-web/studies/{study}/instances").json()) == 10
        assert len(_objects(serve.data_dir, study)) == 10
        print(f"objects left at the kill: {left_at_kill} of {INSTANCES}")
    finally:
        runtime.close()
        serve.stop()
