"""What a stable study looks like from the web side: its series and study thumbnails come
from the JPEGs the worker made (rendered on demand before, or when other options are asked),
and the REST study detail and /metrics say it is stable."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from PIL import Image
from sqlalchemy import select, update

from noctis.core.runtime import Runtime
from noctis.dicom.thumbnail import thumbnail_key
from noctis.index.models import Facility, Instance
from noctis.worker.stable import detect_stable_studies, study_stable
from support import wait


def _jpeg(color: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(out, format="JPEG")
    return out.getvalue()


def _object_key(runtime: Runtime, sop_uid: str) -> str:
    with runtime.sessions() as session:
        return str(
            session.scalar(select(Instance.object_key).where(Instance.sop_instance_uid == sop_uid))
        )


def test_thumbnails_are_served_from_the_worker_once_the_study_is_stable(
    clients, dw, runtime: Runtime
) -> None:
    made = dw.build_study(["explicit", "jpeg_baseline", "deflate"])
    client = clients("rad_north")
    assert dw.stow(client, list(made.files.values())).status_code == 200
    sop = {kind: uid for kind, uid in zip(["explicit", "jpeg", "deflate"], made.files, strict=True)}
    study_url = f"/dicom-web/studies/{made.study_uid}"

    def series_url(kind: str) -> str:
        return f"{study_url}/series/{made.series[sop[kind]]}/thumbnail"

    on_demand = {kind: client.get(series_url(kind)) for kind in sop}
    assert all(r.status_code == 200 for r in on_demand.values())

    outcome = study_stable(runtime, facility="north", study_instance_uid=made.study_uid)
    assert "2 thumbnails made" in outcome  # the deflated object is left to the API

    keys = {
        kind: thumbnail_key(
            "north", made.study_uid, made.series[sop[kind]], _object_key(runtime, sop[kind])
        )
        for kind in sop
    }
    assert not runtime.store.exists(keys["deflate"])
    for kind in ("explicit", "jpeg"):
        made_by_worker = runtime.store.get(keys[kind])
        served = client.get(series_url(kind))
        assert served.headers["content-type"] == "image/jpeg"
        assert served.content == made_by_worker
        assert made_by_worker == on_demand[kind].content  # the same image either way

    # Served from the object: change it and the API answers with what it now holds.
    marker = _jpeg("red")
    runtime.store.put(keys["explicit"], io.BytesIO(marker), len(marker))
    assert client.get(series_url("explicit")).content == marker
    assert client.get(f"{study_url}/thumbnail").content == marker  # its first series
    # Other renderings are still made on demand, and so is the deflated series'.
    other = client.get(series_url("explicit"), params={"viewport": "64,64"})
    assert other.status_code == 200 and other.content != marker
    assert client.get(series_url("explicit"), params={"accept": "image/png"}).content != marker
    assert client.get(series_url("deflate")).content == on_demand["deflate"].content
    # Another facility's user still cannot see it.
    assert clients("rad_south").get(series_url("explicit")).status_code == 404


def test_the_study_detail_and_metrics_say_when_a_study_became_stable(
    clients, dw, runtime: Runtime
) -> None:
    made = dw.build_study(["explicit", "implicit"])
    client = clients("rad_north")
    assert dw.stow(client, list(made.files.values())).status_code == 200
    url = f"/api/facilities/north/studies/{made.study_uid}"
    before = client.get(url)
    assert before.status_code == 200, before.text
    body = before.json()
    assert body["number_of_instances"] == 2 and body["number_of_series"] == 2
    assert body["stable"] == {
        "stable": False,
        "stable_at": None,
        "times": 0,
        "derivatives_done": False,
    }
    metric = 'noctis_studies_stabilised_total{facility="north"}'

    def counted() -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith(metric):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    counted_before = counted()
    # North's quiet time (its Facility spec) is short; the archive's default is a minute.
    with runtime.sessions.begin() as session:
        session.execute(
            update(Facility)
            .where(Facility.name == "north")
            .values(spec={"stableAfterSeconds": 0.1})
        )
    declared = wait.until(lambda: detect_stable_studies(runtime), what="stable", timeout=10)
    assert [d.study_instance_uid for d in declared] == [made.study_uid]
    after = client.get(url).json()["stable"]
    assert after["stable"] is True and after["times"] == 1
    stable_at = datetime.fromisoformat(after["stable_at"])
    assert stable_at.utcoffset() == timedelta(0)  # said in UTC
    assert abs(datetime.now(UTC) - stable_at) < timedelta(minutes=5)
    assert after["derivatives_done"] is False  # its task has not run (no worker here)
    study_stable(
        runtime,
        facility="north",
        study_instance_uid=made.study_uid,
        version=declared[0].version.isoformat(),
    )
    assert client.get(url).json()["stable"]["derivatives_done"] is True
    assert counted() == counted_before + 1
    # Facilities the caller may not read answer 404, like an unknown study.
    assert clients("rad_south").get(url).status_code == 404
    assert client.get("/api/facilities/north/studies/1.2.3").status_code == 404
