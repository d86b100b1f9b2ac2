"""QIDO-RS: matching at every level, includefield, paging, and 400 for what cannot be honoured."""

from __future__ import annotations

import pytest

STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"


def _values(results: list[dict], tag: str) -> list:
    return [r[tag]["Value"][0] for r in results if "Value" in r.get(tag, {})]


@pytest.fixture
def studies(clients, dw):
    """Three north studies (CT+MR; MR; JPEG US) and one south study."""
    north = clients("rad_north")
    made = {
        "alpha": dw.build_study(
            ["explicit", "implicit"],
            patient_name="Alpha^Anna",
            patient_id="PA1",
            StudyDate="20240105",
            AccessionNumber="ACC1",
        ),
        "beta": dw.build_study(
            ["implicit"], patient_name="Beta^Bob", patient_id="PB2", StudyDate="20240220"
        ),
        "gamma": dw.build_study(
            ["jpeg_baseline"], patient_name="Alvarez^Al", patient_id="PG3", StudyDate="20231231"
        ),
    }
    for study in made.values():
        assert dw.stow(north, list(study.files.values())).status_code == 200
    made["south"] = dw.build_study(["explicit"], patient_name="Alpha^South", patient_id="PS9")
    assert dw.stow(clients("rad_south"), list(made["south"].files.values())).status_code == 200
    return made


def _search(client, path="/dicom-web/studies", **params):
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    return response.json()


def test_studies_carry_what_a_viewer_needs(clients, studies):
    results = _search(clients("rad_north"), PatientID="PA1")
    assert len(results) == 1
    study = results[0]
    assert study[STUDY_UID]["Value"] == [studies["alpha"].study_uid]
    assert sorted(study["00080061"]["Value"]) == ["CT", "MR"]  # ModalitiesInStudy
    assert study["00201206"]["Value"] == [2]  # NumberOfStudyRelatedSeries
    assert study["00201208"]["Value"] == [2]  # NumberOfStudyRelatedInstances
    assert study["00100010"]["Value"] == [{"Alphabetic": "Alpha^Anna"}]
    assert study["00081190"]["Value"][0].endswith(f"/studies/{studies['alpha'].study_uid}")
    assert study["00080056"]["Value"] == ["ONLINE"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"PatientName": "Al*"}, {"alpha", "gamma"}),
        ({"00100010": "al*"}, {"alpha", "gamma"}),  # by tag, case-insensitive names
        ({"PatientName": "B?ta*"}, {"beta"}),
        ({"00100020": "PB2"}, {"beta"}),
        ({"StudyDate": "20240101-20241231"}, {"alpha", "beta"}),
        ({"StudyDate": "-20231231"}, {"gamma"}),
        ({"AccessionNumber": "ACC1"}, {"alpha"}),
        ({"ModalitiesInStudy": "CT"}, {"alpha"}),
        ({"ModalitiesInStudy": "MR"}, {"alpha", "beta"}),
        ({"PatientName": "Alp", "fuzzymatching": "true"}, {"alpha"}),
    ],
)
def test_study_matching(clients, studies, params, expected):
    results = _search(clients("rad_north"), **params)
    uids = {studies[name].study_uid for name in expected}
    assert set(_values(results, STUDY_UID)) == uids


def test_study_uid_list(clients, studies):
    wanted = [studies["alpha"].study_uid, studies["gamma"].study_uid]
    results = _search(clients("rad_north"), StudyInstanceUID="\\".join(wanted))
    assert sorted(_values(results, STUDY_UID)) == sorted(wanted)


def test_other_facility_studies_never_match(clients, studies):
    results = _search(clients("rad_north"), PatientName="Alpha*")
    assert _values(results, STUDY_UID) == [studies["alpha"].study_uid]
    assert _search(clients("rad_north"), StudyInstanceUID=studies["south"].study_uid) == []
    everything = _search(clients("admin"), PatientName="Alpha*")
    assert len(everything) == 2


def test_series_of_a_study_and_across_studies(clients, studies):
    client = clients("rad_north")
    alpha = studies["alpha"]
    series = _search(client, f"/dicom-web/studies/{alpha.study_uid}/series")
    assert set(_values(series, SERIES_UID)) == set(alpha.series.values())
    for item in series:
        assert item["00201209"]["Value"] == [1]  # NumberOfSeriesRelatedInstances
        assert f"/studies/{alpha.study_uid}/series/" in item["00081190"]["Value"][0]
    ct = _search(client, f"/dicom-web/studies/{alpha.study_uid}/series", Modality="CT")
    assert _values(ct, "00080060") == ["CT"]
    all_mr = _search(client, "/dicom-web/series", Modality="MR")
    assert len(all_mr) == 2
    assert all("00100010" in item for item in all_mr)  # study attributes outside a study


def test_instances_at_every_scope(clients, studies):
    client = clients("rad_north")
    alpha = studies["alpha"]
    sop_uid, series_uid = next(iter(alpha.series.items()))
    scoped = _search(client, f"/dicom-web/studies/{alpha.study_uid}/series/{series_uid}/instances")
    assert _values(scoped, SOP_UID) == [sop_uid]
    assert scoped[0]["00083002"]["Value"] == [alpha.syntaxes[sop_uid]]
    assert scoped[0]["00081190"]["Value"][0].endswith(f"/instances/{sop_uid}")
    in_study = _search(client, f"/dicom-web/studies/{alpha.study_uid}/instances")
    assert set(_values(in_study, SOP_UID)) == set(alpha.files)
    by_uid = _search(client, "/dicom-web/instances", SOPInstanceUID=sop_uid)
    assert _values(by_uid, SOP_UID) == [sop_uid]
    south_sop = next(iter(studies["south"].files))
    assert _search(client, "/dicom-web/instances", SOPInstanceUID=south_sop) == []


def test_includefield_list_repeated_and_all(clients, studies):
    client = clients("rad_north")
    url = "/dicom-web/studies?PatientID=PA1&includefield=00081030,StudyID&includefield=00080020"
    response = client.get(url)
    assert response.status_code == 200
    assert {"00081030", "00200010", "00080020"} <= set(response.json()[0])
    everything = _search(client, PatientID="PA1", includefield="all")[0]
    assert "00201206" in everything and "00100040" in everything
    # A real attribute the index does not keep, or a lower-level one, is simply not returned.
    ok = _search(client, PatientID="PA1", includefield="00180050,00080060")
    assert len(ok) == 1 and "00180050" not in ok[0]


def test_limit_offset_and_the_warning_for_more(clients, studies):
    client = clients("rad_north")
    first = client.get("/dicom-web/studies", params={"limit": 2})
    assert len(first.json()) == 2
    assert "Warning" in first.headers
    rest = _search(client, limit=2, offset=2)
    assert len(rest) == 1
    uids = _values(first.json(), STUDY_UID) + _values(rest, STUDY_UID)
    assert len(set(uids)) == 3


def test_empty_result_is_200_and_an_empty_list(clients, studies):
    assert _search(clients("rad_north"), PatientName="Nobody*") == []


def test_ohif_style_study_query(clients, studies):
    params = {
        "limit": "101",
        "offset": "0",
        "fuzzymatching": "false",
        "includefield": "00081030,00080060",
        "00100020": "PA1",
    }
    results = _search(clients("rad_north"), **params)
    assert _values(results, STUDY_UID) == [studies["alpha"].study_uid]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"NoSuchKey": "x"}, "NoSuchKey"),
        ({"99990010": "x"}, "99990010"),
        ({"SliceThickness": "1"}, "not supported"),
        ({"Modality": "CT"}, "series-level"),
        ({"SOPInstanceUID": "1.2.3"}, "instance-level"),
        ({"StudyDate": "yesterday"}, "YYYYMMDD"),
        ({"StudyDate": "-"}, "empty range"),
        ({"StudyTime": "25h"}, "HHMMSS"),
        ({"NumberOfStudyRelatedSeries": "many"}, "number"),
        ({"StudyInstanceUID": "not-a-uid"}, "UID"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"fuzzymatching": "maybe"}, "fuzzymatching"),
        ({"includefield": "NotAnAttribute"}, "NotAnAttribute"),
        ({"00081032.00080100": "x"}, "sequence"),
        ({"NumberOfStudyRelatedSeries": "99999999999999999999"}, "out of range"),
        ({"StudyInstanceUID": "\\"}, "empty list"),
        ({"offset": "99999999999999999999"}, "at most"),
    ],
)
def test_bad_parameters_are_400_with_a_message(clients, studies, params, message):
    response = clients("rad_north").get("/dicom-web/studies", params=params)
    assert response.status_code == 400, response.text
    assert message in response.json()["detail"]


def test_modalities_in_study_only_matches_studies(clients, studies):
    response = clients("rad_north").get("/dicom-web/series", params={"ModalitiesInStudy": "CT"})
    assert response.status_code == 400
    assert "Modality" in response.json()["detail"]


def test_a_repeated_filter_is_refused(clients, studies):
    response = clients("rad_north").get("/dicom-web/studies?PatientID=A&00100020=B")
    assert response.status_code == 400


def test_bad_uids_in_the_path_are_400(clients, studies):
    assert clients("rad_north").get("/dicom-web/studies/x*y/series").status_code == 400


def test_unacceptable_accept_is_406(clients, studies):
    response = clients("rad_north").get(
        "/dicom-web/studies", headers={"Accept": "application/dicom+xml"}
    )
    assert response.status_code == 406


def test_queries_are_audited(clients, studies, runtime):
    from sqlalchemy import select

    from noctis.index.accounts import AuditRow

    _search(clients("rad_north"), PatientID="PA1")
    with runtime.sessions() as session:
        events = session.scalars(select(AuditRow).where(AuditRow.action == "qido.studies")).all()
    assert [e.outcome for e in events] == ["success"]
    assert events[0].detail["query"] == {"PatientID": "PA1"}


def test_attributes_without_a_value_are_left_out_so_ohif_can_list_the_study(clients, dw):
    """A study whose instances have no Modality (pydicom's test files include such) answers
    without ModalitiesInStudy instead of ``{"vr": "CS"}``: OHIF's study list reads
    ``ModalitiesInStudy.Value.length`` and failed for the whole list otherwise."""
    made = dw.build_study(["explicit"], Modality="", AccessionNumber="")
    assert dw.stow(clients("rad_north"), list(made.files.values())).status_code == 200
    ohif_fields = "00081030,00080060,00080090,00100030"  # what OHIF's study list asks for
    results = _search(
        clients("rad_north"),
        StudyInstanceUID=made.study_uid,
        includefield=ohif_fields,
        limit="101",
        offset="0",
        fuzzymatching="false",
    )
    assert len(results) == 1
    study = results[0]
    assert "00080061" not in study and "00080060" not in study and "00080050" not in study
    assert study[STUDY_UID]["Value"] == [made.study_uid]
    assert all("Value" in element for element in study.values()), study
    series = _search(clients("rad_north"), f"/dicom-web/studies/{made.study_uid}/series")
    assert "00080060" not in series[0]
