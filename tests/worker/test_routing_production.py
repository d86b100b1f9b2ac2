"""Forwarding on the production pair, PostgreSQL + S3: two workers sending to one storescp at
once share its transfers (claims with SKIP LOCKED), so each instance arrives once, read from
S3 byte for byte, and each transfer counts one attempt."""

from __future__ import annotations

import threading
from pathlib import Path

from routing_support import (
    add_route,
    attempts,
    dataset_bytes_by_uid,
    facility_with_destinations,
    route_progress,
)

from noctis.core.routing import route_study
from noctis.core.runtime import Runtime
from noctis.settings import Settings
from noctis.storage.s3 import S3Store
from noctis.worker.forward import forward_to_destination
from support.archive import open_runtime
from support.dcmtk import StoreSCP
from support.dicomdata import generate_ct_series
from support.incoming import ingest_file


def test_two_workers_forward_a_study_from_s3_once(
    tmp_path: Path, pg_url: str, s3_store: S3Store
) -> None:
    settings = Settings(
        mode="production",
        data_dir=tmp_path,
        database_url=pg_url,
        spool_dir=tmp_path / "spool",
        route_batch=7,
    )
    runtime: Runtime = open_runtime(settings, store=s3_store)
    files = generate_ct_series(tmp_path / "ct", slices=40, size=32)
    expected = dataset_bytes_by_uid(files)
    with StoreSCP(tmp_path / "received", ae_title="DEST") as scp:
        east = facility_with_destinations(runtime, "east", {"DEST": scp.port})
        add_route(runtime, "to-dest", facility="east", destinations=["DEST"])
        study = str(ingest_file(runtime, east, files[0]).header.study_instance_uid)
        for path in files[1:]:
            ingest_file(runtime, east, path)
        assert route_study(runtime, "east", study) == {"DEST": len(files)}
        sent: list[int] = []
        workers = [
            threading.Thread(
                target=lambda: sent.append(forward_to_destination(runtime, destination="DEST"))
            )
            for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        received = dataset_bytes_by_uid(scp.files())
    runtime.close()
    assert sum(sent) == len(files)
    assert received == expected
    assert route_progress(runtime)["DEST"]["sent"] == len(files)
    assert set(attempts(runtime).values()) == {1}
