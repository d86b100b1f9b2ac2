"""Per-facility storage pools over DIMSE (SQLite + directories, PostgreSQL + two S3 buckets):
a facility naming a pool has its instances stored there and only there, and C-GET reads them
back byte-identical; a facility naming a pool this process was not given is refused with
0xA700 and nothing is stored.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from scp_support import AE_TITLE, MODALITY, RunningScp
from sqlalchemy import update

from noctis.core.ingest import FacilityRef
from noctis.core.runtime import Runtime
from noctis.index.models import Facility
from noctis.scp import status
from noctis.scp.client import store_files
from noctis.storage import ObjectStore
from noctis.storage.filesystem import FilesystemStore
from noctis.storage.pools import PooledStore
from noctis.storage.s3 import S3Store
from support import dcmtk
from support.archive import index_counts, indexed_objects, stored_object_keys
from support.dicomdata import dataset_bytes, generate_ct_series, sop_instance_uid
from support.ports import LOOPBACK

pytestmark = [pytest.mark.dcmtk, pytest.mark.both_dimse_paths]

POOL = "second-pool"


@pytest.fixture
def second_pool(
    request: pytest.FixtureRequest, runtime: Runtime, tmp_path: Path
) -> Iterator[ObjectStore]:
    """A second pool beside the runtime's default store: another directory (embedded) or
    another bucket on the same S3 server (production)."""
    default = runtime.store
    if isinstance(default, S3Store):
        server = request.getfixturevalue("s3_server")
        pool: ObjectStore = S3Store.connect(
            server.endpoint,
            f"pool-{secrets.token_hex(6)}",
            access_key=server.access_key,
            secret_key=server.secret_key,
            secure=False,
            spool_dir=tmp_path / "spool",
        )
        pool.ensure_bucket()
    else:
        pool = FilesystemStore(tmp_path / "second-pool", spool_dir=tmp_path / "spool")
    runtime.store = PooledStore(default, {POOL: pool}, default_name="archive-pool")
    yield pool
    runtime.store = default
    if isinstance(pool, S3Store):
        for key in stored_object_keys(pool):
            pool.delete(key)
        pool.client.remove_bucket(pool.bucket)


def _name_pool(runtime: Runtime, facility: FacilityRef, pool: str | None) -> None:
    with runtime.sessions.begin() as session:
        session.execute(
            update(Facility).where(Facility.id == facility.id).values(storage_pool=pool)
        )
    runtime.quotas.forget()  # the pool is read with the quota, every few seconds


def test_a_facility_stores_in_its_pool_and_reads_back_from_it(
    scp: RunningScp, facility: FacilityRef, second_pool: ObjectStore, tmp_path: Path
) -> None:
    runtime = scp.runtime
    assert isinstance(runtime.store, PooledStore)
    _name_pool(runtime, facility, POOL)
    series = generate_ct_series(tmp_path / "ct", slices=3, size=64)
    result = dcmtk.storescu(scp.port, series, calling=MODALITY, called=AE_TITLE)
    assert result.ok, result.output

    keys = indexed_objects(runtime)
    assert len(keys) == 3
    assert all(key.startswith(f"_pools/{POOL}/st-mary/") for key in keys.values())
    in_pool = {key.removeprefix(f"_pools/{POOL}/") for key in keys.values()}
    assert stored_object_keys(second_pool) == in_pool  # in the pool, as st-mary/study/...
    assert stored_object_keys(runtime.store.default) == set()  # nothing in the default

    study = str(dcmread(series[0], stop_before_pixels=True).StudyInstanceUID)
    got = tmp_path / "got"
    result = dcmtk.getscu(
        scp.port,
        {"StudyInstanceUID": study},
        level="STUDY",
        calling=MODALITY,
        called=AE_TITLE,
        output_dir=got,
    )
    assert result.ok, result.output[-3000:]
    received = {sop_instance_uid(p): dataset_bytes(p) for p in got.iterdir()}
    assert received == {sop_instance_uid(p): dataset_bytes(p) for p in series}

    # The Archive's own pool named explicitly is the default store: no prefix.
    _name_pool(runtime, facility, "archive-pool")
    another = generate_ct_series(tmp_path / "ct2", slices=1, size=64)
    assert store_files(LOOPBACK, scp.port, another, AE_TITLE, MODALITY).succeeded == 1
    assert len(stored_object_keys(runtime.store.default)) == 1


def test_a_pool_this_process_was_not_given_is_refused(
    scp: RunningScp, facility: FacilityRef, second_pool: ObjectStore, tmp_path: Path
) -> None:
    _name_pool(scp.runtime, facility, "elsewhere")
    files = generate_ct_series(tmp_path / "ct", slices=1, size=64)
    report = store_files(LOOPBACK, scp.port, files, AE_TITLE, MODALITY)
    assert report.statuses == {files[0]: status.OUT_OF_RESOURCES}
    assert "storage pool 'elsewhere' is not configured" in report.failures[0][1]
    assert index_counts(scp.runtime)["instance"] == 0
    assert stored_object_keys(second_pool) == set()
