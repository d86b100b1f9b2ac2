"""The consistency check over storage pools: an instance stored in a facility's pool is
neither an orphan nor missing; an object in that pool the index does not know is found and
removed from that pool."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from noctis.core.consistency import check_consistency
from noctis.index.models import Facility
from noctis.storage.filesystem import FilesystemStore
from noctis.storage.pools import PooledStore
from support.archive import embedded_settings, indexed_objects, open_runtime, register_facility
from support.dicomdata import generate_ct_series
from support.incoming import ingest_file


def test_the_check_sees_the_objects_of_every_pool(tmp_path: Path) -> None:
    runtime = open_runtime(embedded_settings(tmp_path))
    try:
        pool = FilesystemStore(tmp_path / "cold", spool_dir=tmp_path / "spool")
        runtime.store = PooledStore(runtime.store, {"cold": pool}, default_name=None)
        facility = register_facility(runtime, "north")
        with runtime.sessions.begin() as session:
            session.execute(
                update(Facility).where(Facility.id == facility.id).values(storage_pool="cold")
            )
        (path,) = generate_ct_series(tmp_path / "ct", slices=1, size=16)
        ingest_file(runtime, facility, path)
        (key,) = indexed_objects(runtime).values()
        assert key.startswith("_pools/cold/north/")
        pool.put("north/1.2/1.3/1.4.orphan.dcm", io.BytesIO(b"lost"), 4)

        report = check_consistency(runtime, grace=timedelta(0))

        assert report.missing == []
        assert report.orphans_removed == ["_pools/cold/north/1.2/1.3/1.4.orphan.dcm"]
        assert not pool.exists("north/1.2/1.3/1.4.orphan.dcm")
        assert runtime.store.exists(key)
    finally:
        runtime.close()
