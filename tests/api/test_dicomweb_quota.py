"""Facility quotas on the web side, over real HTTP (uvicorn): STOW-RS answers 507 with a
message per refused instance when the facility is at its quota, and 202 when some instances
fitted; the facility's usage and quota show in the REST facility detail and on /metrics."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import update

from noctis.core.runtime import Runtime
from noctis.index.models import Facility
from support.web import client_for

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILURE_REASON = "00081197"
ERROR_COMMENT = "00000902"


def _set_quota(runtime: Runtime, name: str, **values: int | None) -> None:
    with runtime.sessions.begin() as session:
        session.execute(update(Facility).where(Facility.name == name).values(**values))
    runtime.quotas.refresh_seconds = 0  # read the usage on every store, not every 5 s
    runtime.quotas.forget()


@pytest.fixture
def web(live_server: str, tokens: dict[str, str]) -> Iterator[httpx.Client]:
    with client_for(live_server, tokens["rad_north"]) as client:
        yield client


def test_stow_at_the_byte_quota_answers_507_with_a_message_per_instance(
    web: httpx.Client, dw, runtime: Runtime, live_server: str, tokens: dict[str, str]
) -> None:
    first = dw.build_study(["explicit"])
    assert dw.stow(web, list(first.files.values())).status_code == 200
    used = sum(len(data) for data in first.files.values())
    _set_quota(runtime, "north", quota_bytes=used)  # exactly at its quota

    more = dw.build_study(["explicit", "implicit"])
    response = dw.stow(web, list(more.files.values()))

    assert response.status_code == 507, response.text
    failed = response.json()[FAILED_SOP_SEQUENCE]["Value"]
    assert {item["00081155"]["Value"][0] for item in failed} == set(more.files)
    for item in failed:
        assert item[FAILURE_REASON]["Value"] == [0xA700]
        assert item[ERROR_COMMENT]["Value"] == [f"quota maxBytes: {used} of {used} bytes used"]
    assert "quota maxBytes" in response.headers["Warning"]
    # What was stored stays; a re-send of it stores no new bytes: still 200.
    assert dw.stow(web, list(first.files.values())).status_code == 200
    assert web.get(f"/dicom-web/studies/{first.study_uid}/metadata").status_code == 200

    # Room for one more instance, not two: 202, one stored, one refused.
    one = min(len(data) for data in more.files.values())  # the smaller fits, not both
    _set_quota(runtime, "north", quota_bytes=used + one)
    response = dw.stow(web, list(more.files.values()))
    assert response.status_code == 202, response.text
    body = response.json()
    assert len(body[REFERENCED_SOP_SEQUENCE]["Value"]) == 1
    assert len(body[FAILED_SOP_SEQUENCE]["Value"]) == 1

    with client_for(live_server, tokens["admin"]) as admin:
        detail = admin.get("/api/facilities/north").json()
        metrics = admin.get("/metrics").text
    assert detail["quota"] == {
        "max_bytes": used + one,
        "max_studies": None,
        "exceeded": ["maxBytes"],
    }
    assert detail["size_bytes"] == used + one and detail["studies"] == 2
    assert re.search(
        rf'^noctis_facility_used_bytes\{{facility="north"\}} {used + one}\.0$', metrics, re.M
    ), metrics
    assert re.search(r'^noctis_facility_studies\{facility="north"\} 2\.0$', metrics, re.M)
    assert re.search(
        r'^noctis_facility_quota_exceeded\{facility="north",quota="maxBytes"\} 1\.0$',
        metrics,
        re.M,
    )
    refusals = re.search(
        r'^noctis_quota_refusals_total\{facility="north",quota="maxBytes"\} (\d+)\.0$',
        metrics,
        re.M,
    )
    assert refusals and int(refusals.group(1)) >= 3


def test_the_study_quota_is_shown_exceeded(
    web: httpx.Client, dw, runtime: Runtime, live_server: str, tokens: dict[str, str]
) -> None:
    study = dw.build_study(["explicit"])
    assert dw.stow(web, list(study.files.values())).status_code == 200
    _set_quota(runtime, "north", quota_studies=1)
    response = dw.stow(web, list(dw.build_study(["explicit"]).files.values()))
    assert response.status_code == 507
    item = response.json()[FAILED_SOP_SEQUENCE]["Value"][0]
    assert item[ERROR_COMMENT]["Value"] == ["quota maxStudies: 1 of 1 studies used"]
    with client_for(live_server, tokens["admin"]) as admin:
        detail = admin.get("/api/facilities/north").json()
        metrics = admin.get("/metrics").text
    assert detail["quota"]["exceeded"] == ["maxStudies"]
    assert 'noctis_facility_quota_exceeded{facility="north",quota="maxStudies"} 1.0' in metrics
    assert 'noctis_facility_quota_studies{facility="north"} 1.0' in metrics
