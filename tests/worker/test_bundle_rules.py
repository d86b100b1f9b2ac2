"""The rules a series metadata bundle follows, task by task (no broker): when it is built,
when it is left alone, and that the API never serves from it what the headers would not."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from worker_support import SLICES, CountingStore, bundle_keys, ct_series

from noctis.api.app import create_app
from noctis.core.ingest import FacilityRef, IngestResult
from noctis.core.runtime import Runtime
from noctis.dicom.metadata import bundle_key, decode_bundle, encode_bundle
from noctis.settings import Settings
from noctis.storage.filesystem import FilesystemStore
from noctis.worker.series_metadata import series_metadata
from support.archive import embedded_settings, open_runtime, register_facility
from support.incoming import ingest_file
from support.web import client_for, create_user, token_for


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Embedded settings, on SQLite or on a PostgreSQL database of the test's own."""
    settings = embedded_settings(tmp_path / "data")
    if request.param == "postgres":
        settings = settings.model_copy(update={"database_url": request.getfixturevalue("pg_url")})
    return settings


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    runtime = open_runtime(
        settings, store=CountingStore(FilesystemStore(settings.resolved_storage_path()))
    )
    yield runtime
    runtime.close()


@pytest.fixture
def facility(runtime: Runtime) -> FacilityRef:
    return register_facility(runtime, "north")


@pytest.fixture
def stored(runtime: Runtime, facility: FacilityRef, tmp_path: Path) -> list[IngestResult]:
    """A 30-instance series, stored; the store's counts start after it."""
    results = [ingest_file(runtime, facility, path) for path in ct_series(tmp_path / "series")]
    _store(runtime).reset()
    return results


def _series(stored: list[IngestResult]) -> dict[str, str]:
    header = stored[0].header
    return {
        "facility": "north",
        "study_instance_uid": header.study_instance_uid,
        "series_instance_uid": header.series_instance_uid,
    }


def _key(stored: list[IngestResult]) -> str:
    series = _series(stored)
    return bundle_key(
        series["facility"], series["study_instance_uid"], series["series_instance_uid"]
    )


def _store(runtime: Runtime) -> CountingStore:
    assert isinstance(runtime.store, CountingStore)
    return runtime.store


def test_built_once_then_left_alone_while_it_covers_the_series(
    runtime: Runtime, stored: list[IngestResult]
) -> None:
    store = _store(runtime)
    assert series_metadata(runtime, **_series(stored)) == "built"
    assert store.count("get_range") == SLICES
    assert series_metadata(runtime, **_series(stored)) == "current"
    assert store.count("put") == 1
    assert bundle_keys(store, _key(stored)) == {r.object_key for r in stored}


def test_a_task_gives_way_when_the_series_changed_since_it_was_scheduled(
    runtime: Runtime, stored: list[IngestResult]
) -> None:
    assert series_metadata(runtime, **_series(stored), state="29@earlier") == "superseded"
    assert _store(runtime).count("put") == 0


def test_a_series_that_is_gone_or_in_another_facility_gets_nothing(
    runtime: Runtime, stored: list[IngestResult]
) -> None:
    register_facility(runtime, "south")
    elsewhere = {**_series(stored), "facility": "south"}
    assert series_metadata(runtime, **elsewhere) == "gone"
    assert series_metadata(runtime, **{**_series(stored), "series_instance_uid": "1.2.3"}) == (
        "gone"
    )
    assert _store(runtime).count("put") == 0


def test_a_bundle_of_another_fragment_format_is_rebuilt_not_served(
    runtime: Runtime, settings: Settings, stored: list[IngestResult]
) -> None:
    key = _key(stored)
    old = json.dumps({"format": "noctis.instance-metadata/0", "fragments": {}}).encode()
    runtime.store.put(key, io.BytesIO(old), len(old))
    assert series_metadata(runtime, **_series(stored)) == "built"
    assert set(decode_bundle(runtime.store.get(key))) == {r.object_key for r in stored}


def _get(runtime: Runtime, settings: Settings, url: str) -> bytes:
    create_user(runtime, "rad", "radiologist", ["north"])
    client = client_for(create_app(settings, runtime), token_for(runtime, "rad"))
    response = client.get(url, headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200, response.text
    return response.content


def test_a_stale_bundle_gives_only_listed_instances_and_headers_fill_the_rest(
    runtime: Runtime, settings: Settings, stored: list[IngestResult], tmp_path: Path
) -> None:
    series = _series(stored)
    url = (
        f"/dicom-web/studies/{series['study_instance_uid']}"
        f"/series/{series['series_instance_uid']}/metadata"
    )
    expected = _get(runtime, settings, url)  # no bundle: every header
    # A bundle written before the last 5 instances arrived, also holding a key the index no
    # longer lists (a replaced instance): only listed keys are taken from it.
    assert series_metadata(runtime, **series) == "built"
    key = _key(stored)
    fragments = decode_bundle(runtime.store.get(key))
    for result in stored[25:]:
        del fragments[result.object_key]
    fragments[stored[0].object_key.replace(".dcm", ".old.dcm")] = b'{"bogus":1}'
    data = encode_bundle(fragments)
    runtime.store.put(key, io.BytesIO(data), len(data))

    fresh = Runtime.open(settings, queue=runtime.queue)
    fresh.store = store = CountingStore(FilesystemStore(settings.resolved_storage_path()))
    try:
        client = client_for(create_app(settings, fresh), token_for(fresh, "rad"))
        response = client.get(url, headers={"Accept-Encoding": "identity"})
    finally:
        fresh.close()
    assert response.content == expected
    assert store.count("get", key) == 1
    assert {k for verb, k in store.calls if verb == "get_range"} == {
        r.object_key for r in stored[25:]
    }


def test_one_instance_is_read_from_its_header_not_the_bundle(
    runtime: Runtime, settings: Settings, stored: list[IngestResult]
) -> None:
    assert series_metadata(runtime, **_series(stored)) == "built"
    header = stored[3].header
    url = (
        f"/dicom-web/studies/{header.study_instance_uid}/series/{header.series_instance_uid}"
        f"/instances/{header.sop_instance_uid}/metadata"
    )
    store = _store(runtime)
    store.reset()
    body = _get(runtime, settings, url)
    assert json.loads(body)[0]["00080018"]["Value"] == [header.sop_instance_uid]
    assert store.reads() == [("get_range", stored[3].object_key)]
