"""Whatever the query string, path or Accept header: an answer (2xx/4xx), never a 500.

The in-process client re-raises server exceptions, so an unhandled error fails the test.
"""

from __future__ import annotations

import random

import pytest

KEYS = [
    "PatientName", "00100010", "StudyDate", "StudyTime", "limit", "offset", "fuzzymatching",
    "includefield", "ModalitiesInStudy", "StudyInstanceUID", "NumberOfStudyRelatedSeries",
    "Rows", "InstanceNumber", "SeriesNumber", "AccessionNumber", "window", "viewport", "quality",
    "accept", "SOPInstanceUID", "Modality", "X", "0020000D", "00200013",
]  # fmt: skip
VALUES = [
    "", "*", "?", "\\", "A*B?", "20200101-", "-", "--", "2020-01-01", "12:00", "1e9", "-5",
    "99999999999999999999", "ü", "\x00", "a" * 5000, "1,2", "1,2,3,4,5,6", "0,0", "all", "true",
    "1.2.3\\4.5", "%", "_", "'; drop table study;--",
]  # fmt: skip
ACCEPTS = [
    None, "*/*", "image/png", "garbage", "multipart/related", "multipart/related; type=",
    'multipart/related; type="application/octet-stream"; transfer-syntax=1.2',
    "application/dicom+json;q=0", ",,,;;", "image/*;q=abc",
]  # fmt: skip


@pytest.fixture
def study(clients, dw):
    made = dw.build_study(["explicit", "multiframe"])
    assert dw.stow(clients("rad_north"), list(made.files.values())).status_code == 200
    return made


def test_random_queries_never_fail_the_server(clients, study):
    client = clients("rad_north")
    sop_uid = next(iter(study.files))
    instance = (
        f"/dicom-web/studies/{study.study_uid}/series/{study.series[sop_uid]}/instances/{sop_uid}"
    )
    paths = [
        "/dicom-web/studies",
        "/dicom-web/series",
        "/dicom-web/instances",
        f"/dicom-web/studies/{study.study_uid}/series",
        f"/dicom-web/studies/{study.study_uid}/instances",
        f"/dicom-web/studies/{study.study_uid}/metadata",
        f"/dicom-web/studies/{study.study_uid}/thumbnail",
        f"{instance}/rendered",
        f"{instance}/frames/1",
    ]
    rng = random.Random(20261123)
    for _ in range(600):
        params = [(rng.choice(KEYS), rng.choice(VALUES)) for _ in range(rng.randint(0, 3))]
        accept = rng.choice(ACCEPTS)
        headers = {"Accept": accept} if accept else {}
        response = client.get(rng.choice(paths), params=params, headers=headers)
        assert response.status_code < 500, (params, accept, response.text[:200])


@pytest.mark.parametrize(
    "path",
    [
        "/dicom-web/studies/%00",
        "/dicom-web/studies/1.2/series/%20/instances/x/frames/1",
        "/dicom-web/studies/" + "1" * 200,
        "/dicom-web/studies/1.2.3/series/1.2/instances/1.2/bulkdata/../../etc",
        "/dicom-web/studies/1.2.3/series/1.2/instances/1.2/frames/999999999999999999999",
    ],
)
def test_odd_paths_are_refused_cleanly(clients, path):
    assert clients("rad_north").get(path).status_code in (400, 404)
