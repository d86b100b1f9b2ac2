"""WADO-RS: instances byte-identical to what was stored, metadata with bulk data references."""

from __future__ import annotations

import io

import pytest
from pydicom import Dataset, dcmread

from noctis.dicom.transcode import EXPLICIT_VR_LITTLE_ENDIAN

KINDS = ["explicit", "implicit", "big_endian", "jpeg_baseline", "jpeg2000", "rle", "deflate"]


@pytest.fixture
def study(clients, dw):
    made = dw.build_study(KINDS)
    assert dw.stow(clients("rad_north"), list(made.files.values())).status_code == 200
    return made


def test_study_series_and_instance_are_byte_identical(clients, dw, study):
    client = clients("rad_north")
    parts = dw.split_multipart(client.get(f"/dicom-web/studies/{study.study_uid}"))
    assert sorted(body for _, body in parts) == sorted(study.files.values())
    for headers, body in parts:
        sop_uid = dcmread(io.BytesIO(body), stop_before_pixels=True).SOPInstanceUID
        assert headers["Content-Type"] == (
            f"application/dicom; transfer-syntax={study.syntaxes[sop_uid]}"
        )
    for sop_uid, data in study.files.items():
        series = f"/dicom-web/studies/{study.study_uid}/series/{study.series[sop_uid]}"
        assert [b for _, b in dw.split_multipart(client.get(series))] == [data]
        response = client.get(
            f"{series}/instances/{sop_uid}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        assert [b for _, b in dw.split_multipart(response)] == [data]


@pytest.mark.parametrize(
    "stored",
    ["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.1.99"],  # decoded; inflated as it is sent
)
def test_explicit_little_endian_on_request(clients, dw, study, stored):
    sop_uid = next(u for u, ts in study.syntaxes.items() if ts == stored)
    url = f"/dicom-web/studies/{study.study_uid}/series/{study.series[sop_uid]}/instances/{sop_uid}"
    accept = (
        f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}'
    )
    response = clients("rad_north").get(url, headers={"Accept": accept})
    [(headers, body)] = dw.split_multipart(response)
    assert EXPLICIT_VR_LITTLE_ENDIAN in headers["Content-Type"]
    decoded = dcmread(io.BytesIO(body))
    original = dcmread(io.BytesIO(study.files[sop_uid]))
    assert decoded.file_meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN
    assert (decoded.pixel_array == original.pixel_array).all()
    assert decoded.PatientName == original.PatientName


def test_a_single_part_instance_when_asked_for_application_dicom(clients, study):
    sop_uid = next(iter(study.files))
    url = f"/dicom-web/studies/{study.study_uid}/series/{study.series[sop_uid]}/instances/{sop_uid}"
    response = clients("rad_north").get(url, headers={"Accept": "application/dicom"})
    assert response.status_code == 200
    assert response.content == study.files[sop_uid]


def test_unsupported_instance_media_type_is_406(clients, study):
    response = clients("rad_north").get(
        f"/dicom-web/studies/{study.study_uid}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.3'},
    )
    assert response.status_code == 406


def test_series_metadata_has_every_instance_and_bulk_data_uris(clients, study):
    client = clients("rad_north")
    for sop_uid, series_uid in study.series.items():
        response = client.get(f"/dicom-web/studies/{study.study_uid}/series/{series_uid}/metadata")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/dicom+json"
        [instance] = response.json()
        assert instance["00080018"]["Value"] == [sop_uid]
        assert instance["00083002"]["Value"] == [study.syntaxes[sop_uid]]
        pixel = instance["7FE00010"]
        assert "BulkDataURI" in pixel and "InlineBinary" not in pixel
        assert pixel["BulkDataURI"].startswith("http://testserver/dicom-web/studies/")
        # The JSON is the instance's own header: pydicom reads it back.
        ds = Dataset.from_json(instance, bulk_data_uri_handler=lambda *_: b"")
        original = dcmread(io.BytesIO(study.files[sop_uid]), stop_before_pixels=True)
        assert ds.PatientName == original.PatientName
        assert ds.Rows == original.Rows


def test_study_metadata_and_instance_metadata(clients, study):
    client = clients("rad_north")
    everything = client.get(f"/dicom-web/studies/{study.study_uid}/metadata").json()
    assert {i["00080018"]["Value"][0] for i in everything} == set(study.files)
    sop_uid = next(iter(study.files))
    one = client.get(
        f"/dicom-web/studies/{study.study_uid}/series/{study.series[sop_uid]}"
        f"/instances/{sop_uid}/metadata"
    ).json()
    assert [i["00080018"]["Value"][0] for i in one] == [sop_uid]


def test_metadata_is_cached_and_served_for_other_host_names(clients, study, app):
    client = clients("rad_north")
    url = f"/dicom-web/studies/{study.study_uid}/metadata"
    first = client.get(url).json()
    misses = app.state.dicomweb_cache.metadata.misses
    second = client.get(url, headers={"Host": "pacs.example.org"}).json()
    assert app.state.dicomweb_cache.metadata.misses == misses  # no header read again
    assert second[0]["7FE00010"]["BulkDataURI"].startswith("http://pacs.example.org/dicom-web/")
    assert len(first) == len(second)


def test_pixel_data_bulk_data_resolves(clients, dw, study):
    client = clients("rad_north")
    sop_uid = next(u for u, ts in study.syntaxes.items() if ts == "1.2.840.10008.1.2.1")
    url = (
        f"/dicom-web/studies/{study.study_uid}/series/{study.series[sop_uid]}"
        f"/instances/{sop_uid}/metadata"
    )
    bulk_uri = client.get(url).json()[0]["7FE00010"]["BulkDataURI"]
    response = client.get(bulk_uri.removeprefix("http://testserver"))
    [(_, body)] = dw.split_multipart(response)
    assert body == dcmread(io.BytesIO(study.files[sop_uid])).PixelData


def test_unknown_bulk_data_is_404(clients, study):
    sop_uid = next(iter(study.files))
    url = (
        f"/dicom-web/studies/{study.study_uid}/series/{study.series[sop_uid]}"
        f"/instances/{sop_uid}/bulkdata/00991234"
    )
    assert clients("rad_north").get(url).status_code == 404


def test_unknown_study_series_instance_are_404(clients, study):
    client = clients("rad_north")
    assert client.get("/dicom-web/studies/1.2.3.4").status_code == 404
    assert client.get(f"/dicom-web/studies/{study.study_uid}/series/1.2.3").status_code == 404
    assert client.get("/dicom-web/studies/1.2.3.4/metadata").status_code == 404


def test_metadata_only_as_json(clients, study):
    response = clients("rad_north").get(
        f"/dicom-web/studies/{study.study_uid}/metadata",
        headers={"Accept": "multipart/related; type=application/dicom+xml"},
    )
    assert response.status_code == 406


def test_metadata_is_gzipped_for_browsers(clients, dw):
    made = dw.build_study(["explicit"] * 12)  # enough JSON to be worth compressing
    client = clients("rad_north")
    assert dw.stow(client, list(made.files.values())).status_code == 200
    url = f"/dicom-web/studies/{made.study_uid}/metadata"
    plain = client.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    zipped = client.get(url, headers={"Accept-Encoding": "gzip, deflate"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.json() == plain.json()  # httpx decodes it
    assert int(zipped.headers["content-length"]) < len(plain.content) / 4
