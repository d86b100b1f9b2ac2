"""``GET /api/studies/{facility}/{study}/results``: analysis results stored over STOW-RS,
found by the results scan, shown to the worklist's roles of the study's facility only."""

from __future__ import annotations

import time
from pathlib import Path

from noctis.core.results import SETTLE_SECONDS, scan_results
from support import analysis as an


def test_results_stored_over_stow_are_listed_to_the_facility_only(
    clients, dw, runtime, tmp_path: Path
) -> None:
    rad_north = clients("rad_north")
    study = dw.build_study(["explicit"])
    critical = an.sr(
        tmp_path,
        study.study_uid,
        an.container(an.CRITICAL_HEADING, an.text(an.FINDING, "Free air under the diaphragm")),
        PatientID=study.patient_id,
    )
    stored = dw.stow(rad_north, [*study.files.values(), critical.read_bytes()])
    assert stored.status_code == 200, stored.text
    time.sleep(SETTLE_SECONDS)
    assert scan_results(runtime) == 1

    url = f"/api/studies/north/{study.study_uid}/results"
    listed = rad_north.get(url)
    assert listed.status_code == 200, listed.text
    (result,) = listed.json()
    assert result["sop_class"] == "Comprehensive SR" and result["kind"] == "sr"
    assert (result["sender"], result["sender_type"]) == ("rad_north", "token")
    assert result["critical"] is True
    assert result["findings"] == ["Finding: Free air under the diaphragm"]
    assert clients("admin").get(url).json() == listed.json()

    # another facility's radiologist: as if the study did not exist; a referring physician
    # is no worklist role; nobody signed in: 401
    assert clients("rad_south").get(url).status_code == 404
    assert (
        clients("rad_south").get(f"/api/studies/south/{study.study_uid}/results").status_code == 404
    )
    assert clients("ref_north").get(url).status_code == 403
    assert clients(None).get(url).status_code == 401
    assert rad_north.get("/api/studies/north/1.2.3/results").status_code == 404
