"""Per-facility storage pools on the web side, over real HTTP (uvicorn): instances a facility
stores with STOW-RS land in its pool, and WADO-RS (instance, frames, metadata) and rendered
read them back from there."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import update

from noctis.core.runtime import Runtime
from noctis.index.models import Facility
from noctis.storage.filesystem import FilesystemStore
from noctis.storage.pools import PooledStore
from support.archive import indexed_objects, stored_object_keys
from support.web import client_for


def test_stow_lands_in_the_pool_and_wado_reads_it_back(
    live_server: str, tokens: dict[str, str], dw, runtime: Runtime, tmp_path: Path
) -> None:
    pool = FilesystemStore(tmp_path / "pool-b", spool_dir=runtime.settings.resolved_spool_dir())
    default = runtime.store
    runtime.store = PooledStore(default, {"pool-b": pool}, default_name=None)
    with runtime.sessions.begin() as session:
        session.execute(
            update(Facility).where(Facility.name == "north").values(storage_pool="pool-b")
        )
    runtime.quotas.forget()

    study = dw.build_study(["explicit"])
    ((sop_uid, data),) = study.files.items()
    with client_for(live_server, tokens["rad_north"]) as web:
        assert dw.stow(web, [data]).status_code == 200
        key = indexed_objects(runtime)[sop_uid]
        assert key.startswith("_pools/pool-b/north/")
        assert stored_object_keys(pool) == {key.removeprefix("_pools/pool-b/")}
        assert [k for k in stored_object_keys(default) if k.endswith(".dcm")] == []

        base = f"/dicom-web/studies/{study.study_uid}/series/{study.series[sop_uid]}"
        instance = web.get(
            f"{base}/instances/{sop_uid}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        assert instance.status_code == 200, instance.text
        ((_, body),) = dw.split_multipart(instance)
        assert body == data
        frame = web.get(
            f"{base}/instances/{sop_uid}/frames/1",
            headers={
                "Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"
            },
        )
        assert frame.status_code == 200
        metadata = web.get(f"/dicom-web/studies/{study.study_uid}/metadata")
        assert metadata.status_code == 200
        assert metadata.json()[0]["00080018"]["Value"] == [sop_uid]
        rendered = web.get(f"{base}/instances/{sop_uid}/rendered", headers={"Accept": "image/jpeg"})
        assert rendered.status_code == 200 and rendered.content[:2] == b"\xff\xd8"
    runtime.store = default


def test_rest_shows_the_facility_pool(clients, runtime: Runtime) -> None:
    with runtime.sessions.begin() as session:
        session.execute(
            update(Facility).where(Facility.name == "north").values(storage_pool="pool-b")
        )
    detail = clients("admin").get("/api/facilities/north")
    assert detail.status_code == 200
    assert detail.json()["storage_pool"] == "pool-b"
