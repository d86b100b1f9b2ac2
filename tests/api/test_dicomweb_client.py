"""Round trips with a real DICOMweb client (dicomweb-client) against the app under uvicorn:
embedded (SQLite + filesystem) and production (PostgreSQL + S3) archives."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset, dcmread, dcmwrite
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array

from noctis.api.app import create_app
from noctis.core.queue import NullQueue
from noctis.core.runtime import Runtime
from noctis.index import db
from noctis.index.migrate import upgrade
from noctis.index.models import Facility
from noctis.settings import Settings
from support.web import create_user, running, token_for

KINDS = ["explicit", "implicit", "jpeg_baseline", "jpeg2000", "jpeg_ls", "rle", "multiframe"]
TRANSFER_SYNTAX_ANY = ("application/octet-stream", "*")


def dicomweb(base_url: str, token: str) -> DICOMwebClient:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return DICOMwebClient(url=f"{base_url}/dicom-web", session=session)


def _parse(data: bytes) -> Dataset:
    return dcmread(io.BytesIO(data))


def round_trip(client: DICOMwebClient, dw, *, facility: str | None = None) -> None:
    """STOW a study, find it at each level, retrieve everything and compare with what was sent."""
    study = dw.build_study(KINDS, patient_name="Client^Round^Trip")
    datasets = [_parse(data) for data in study.files.values()]
    params = {"facility": facility} if facility else None
    result = client.store_instances(datasets, additional_params=params)
    assert len(result.ReferencedSOPSequence) == len(KINDS)
    assert "FailedSOPSequence" not in result

    # dicomweb-client encodes each data set with dcmwrite: those are the bytes sent.
    sent = {}
    for ds in datasets:
        buffer = io.BytesIO()
        dcmwrite(buffer, ds)
        sent[ds.SOPInstanceUID] = buffer.getvalue()

    found = client.search_for_studies(
        search_filters={"PatientName": "Client^Round*"}, fields=["NumberOfStudyRelatedInstances"]
    )
    assert [s["0020000D"]["Value"][0] for s in found] == [study.study_uid]
    assert found[0]["00201208"]["Value"] == [len(KINDS)]
    series = client.search_for_series(study.study_uid, search_filters={"Modality": "MR"})
    assert {s["0020000E"]["Value"][0] for s in series} == {
        study.series[ds.SOPInstanceUID] for ds in datasets if ds.Modality == "MR"
    }
    instances = client.search_for_instances(study.study_uid, fields=["all"])
    assert {i["00080018"]["Value"][0] for i in instances} == set(study.files)

    # Byte-identical: the raw multipart body, split by the client's own parser.
    response = client._session.get(
        f"{client.base_url}/studies/{study.study_uid}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    parts = list(client._decode_multipart_message(response, stream=False))
    assert sorted(parts) == sorted(sent.values())
    assert {ds.SOPInstanceUID for ds in client.retrieve_study(study.study_uid)} == set(sent)

    for ds in datasets:
        sop_uid, series_uid = ds.SOPInstanceUID, study.series[ds.SOPInstanceUID]
        one = client.retrieve_instance(study.study_uid, series_uid, sop_uid)
        assert one.SOPInstanceUID == sop_uid

        metadata = client.retrieve_series_metadata(study.study_uid, series_uid)
        assert [m["00080018"]["Value"][0] for m in metadata] == [sop_uid]
        assert "BulkDataURI" in metadata[0]["7FE00010"]

        count = int(ds.get("NumberOfFrames") or 1)
        numbers = [1, count] if count > 1 else [1]
        frames = client.retrieve_instance_frames(
            study.study_uid, series_uid, sop_uid, numbers, media_types=(TRANSFER_SYNTAX_ANY,)
        )
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            expected = list(generate_frames(ds.PixelData, number_of_frames=count))
            assert frames == [expected[n - 1] for n in numbers]
        else:
            array = pixel_array(ds, raw=True)
            array = array if count > 1 else array[np.newaxis]
            assert frames == [array[n - 1].astype("<u2").tobytes() for n in numbers]

        rendered = client.retrieve_instance_rendered(
            study.study_uid, series_uid, sop_uid, media_types=("image/jpeg",)
        )
        assert rendered[:2] == b"\xff\xd8"


@pytest.fixture
def client(live_server, tokens) -> DICOMwebClient:
    return dicomweb(live_server, tokens["rad_north"])


def test_round_trip_embedded(client, dw):
    round_trip(client, dw)


def test_other_facility_is_invisible_to_the_client(live_server, tokens, dw):
    north = dicomweb(live_server, tokens["rad_north"])
    south = dicomweb(live_server, tokens["rad_south"])
    study = dw.build_study(["explicit"])
    north.store_instances([_parse(d) for d in study.files.values()])
    assert south.search_for_studies(search_filters={"StudyInstanceUID": study.study_uid}) == []
    with pytest.raises(requests.HTTPError) as raised:
        south.retrieve_study_metadata(study.study_uid)
    assert raised.value.response.status_code == 404


def test_a_rejected_store_raises_in_the_client(client, dw):
    study = dw.build_study(["explicit"])
    ds = _parse(next(iter(study.files.values())))
    with pytest.raises(requests.HTTPError) as raised:
        client.store_instances([ds], study_instance_uid="1.2.3.4")
    assert raised.value.response.status_code == 409
    assert raised.value.response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [43265]


@pytest.fixture
def production_server(pg_url, s3_store, tmp_path) -> Iterator[tuple[str, str]]:
    """The app on PostgreSQL and S3 (SeaweedFS), under uvicorn; (base URL, admin token)."""
    settings = Settings(
        mode="production", database_url=pg_url, storage_backend="s3", data_dir=tmp_path
    )
    upgrade(pg_url)
    runtime = Runtime(settings, db.open_index(pg_url), s3_store, NullQueue())
    with runtime.sessions.begin() as session:
        session.add(Facility(name="north"))
    create_user(runtime, "prod_admin", "admin", [])
    token = token_for(runtime, "prod_admin")
    app = create_app(settings, runtime)
    with running(app) as base_url:
        yield base_url, token
    runtime.close()


def test_round_trip_production(production_server, dw):
    base_url, token = production_server
    round_trip(dicomweb(base_url, token), dw, facility="north")
