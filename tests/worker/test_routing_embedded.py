"""Routing on the in-process queue (what `noctis serve` runs): stable studies and single
instances reach dcmtk's storescp byte for byte in their own transfer syntax; a destination
refusing some instances gets the rest, the refused ones end as dead letters with the reason,
and a retry of the dead letters delivers them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from routing_support import (
    RefusingSCP,
    add_route,
    attempts,
    dataset_bytes_by_uid,
    facility_with_destinations,
    route_progress,
)

from noctis.core.queue import ROUTE_STUDY, InProcessQueue
from noctis.core.runtime import Runtime
from noctis.core.transfers import retry_dead
from noctis.worker.forward import kick
from noctis.worker.inprocess import register_tasks
from support import wait
from support.archive import embedded_settings, open_runtime
from support.dcmtk import StoreSCP
from support.dicomdata import generate_ct_series, transfer_syntax_samples
from support.incoming import ingest_file

FAST_RETRY = {"attempts": 3, "initialDelaySeconds": 0.2, "maxDelaySeconds": 0.5}


def _embedded(tmp_path: Path, **settings: object) -> Runtime:
    (tmp_path / "archive").mkdir()
    runtime = open_runtime(embedded_settings(tmp_path / "archive", **settings))
    runtime.queue = InProcessQueue()
    register_tasks(runtime)
    return runtime


def test_a_stable_study_reaches_storescp_as_stored_in_each_syntax(tmp_path: Path) -> None:
    runtime = _embedded(tmp_path)
    with StoreSCP(tmp_path / "received", ae_title="DEST") as scp:
        facility = facility_with_destinations(runtime, "east", {"DEST": scp.port})
        add_route(runtime, "to-dest", facility="east", destinations=["DEST"])
        files = generate_ct_series(tmp_path / "ct", slices=12, size=32)
        samples = list(transfer_syntax_samples(tmp_path / "samples").values())
        for path in files + samples:
            ingest_file(runtime, facility, path)
        expected = dataset_bytes_by_uid(files + samples)
        studies = {
            str(result.header.study_instance_uid)
            for result in (ingest_file(runtime, facility, p) for p in files + samples)
        }
        for study in studies:
            runtime.queue.send(ROUTE_STUDY, facility="east", study_instance_uid=study)
        runtime.drain_tasks()
        received = dataset_bytes_by_uid(scp.files())
    assert set(received) == set(expected)
    for uid, data in received.items():
        # (PS3.5: an odd-length deflated data set travels with a pad byte)
        assert data == _padded(expected[uid]), f"{uid} was not sent as stored"
    assert route_progress(runtime)["DEST"] == {
        "destination": "DEST",
        "pending": 0,
        "sent": len(expected),
        "failed": 0,
        "dead": 0,
        "lastError": "",
    }
    assert set(attempts(runtime).values()) == {1}
    # Stable again (nothing new): nothing is sent twice.
    for study in studies:
        runtime.queue.send(ROUTE_STUDY, facility="east", study_instance_uid=study)
    runtime.drain_tasks()
    assert route_progress(runtime)["DEST"]["sent"] == len(expected)
    runtime.close()


def _padded(data: bytes) -> bytes:
    return data + b"\x00" if len(data) % 2 else data


def test_refused_instances_become_dead_letters_and_a_retry_delivers_them(tmp_path: Path) -> None:
    runtime = _embedded(tmp_path)
    files = generate_ct_series(tmp_path / "ct", slices=10, size=32)
    expected = dataset_bytes_by_uid(files)
    refused = set(sorted(expected)[:3])
    destination = RefusingSCP("PICKY", refuse=lambda uid: uid in refused).start()
    try:
        facility = facility_with_destinations(runtime, "east", {"PICKY": destination.port})
        add_route(runtime, "picky", facility="east", destinations=["PICKY"], retry=FAST_RETRY)
        study = str(ingest_file(runtime, facility, files[0]).header.study_instance_uid)
        for path in files[1:]:
            ingest_file(runtime, facility, path)
        runtime.queue.send(ROUTE_STUDY, facility="east", study_instance_uid=study)

        def settled() -> bool:
            runtime.drain_tasks()
            kick(runtime, ["PICKY"])  # as the periodic job does when retries fall due
            runtime.drain_tasks()
            return route_progress(runtime)["PICKY"]["dead"] == len(refused)

        wait.until(settled, timeout=20, what="the refused instances to be dead letters")
        state = route_progress(runtime)["PICKY"]
        assert state["sent"] == len(expected) - len(refused)
        assert state["pending"] == state["failed"] == 0
        assert "0xA700" in state["lastError"]
        assert set(destination.received) == set(expected) - refused
        refusals = [uid for uid, code in destination.answered if code == 0xA700]
        assert Counter(refusals) == {uid: FAST_RETRY["attempts"] for uid in refused}
        assert {attempts(runtime)[uid] for uid in refused} == {FAST_RETRY["attempts"]}

        destination.refuse = lambda uid: False  # the destination was fixed
        with runtime.sessions.begin() as session:
            assert retry_dead(session, facility="east") == {"PICKY": len(refused)}
        kick(runtime, ["PICKY"])
        runtime.drain_tasks()
    finally:
        destination.stop()
    assert route_progress(runtime)["PICKY"]["sent"] == len(expected)
    assert destination.received == expected
    runtime.close()


def test_a_study_becoming_stable_is_forwarded_whole(tmp_path: Path) -> None:
    """The whole chain as `noctis serve` runs it: stable detection sends ROUTE_STUDY, routing
    forwards the study once; more instances later make it stable again and only they go."""
    from noctis.worker.inprocess import start_periodic

    runtime = _embedded(tmp_path, stable_after_seconds=0.5, stable_sweep_seconds=0.1)
    periodic = start_periodic(runtime)
    try:
        with StoreSCP(tmp_path / "received", ae_title="DEST") as scp:
            facility = facility_with_destinations(runtime, "east", {"DEST": scp.port})
            add_route(runtime, "when-stable", facility="east", destinations=["DEST"])
            first = generate_ct_series(tmp_path / "ct", slices=8, size=32)
            study = str(ingest_file(runtime, facility, first[0]).header.study_instance_uid)
            for path in first[1:]:
                ingest_file(runtime, facility, path)
            expected = dataset_bytes_by_uid(first)
            wait.until(
                lambda: route_progress(runtime).get("DEST", {}).get("sent") == len(first),
                what="the stable study forwarded",
                timeout=30,
            )
            later = generate_ct_series(
                tmp_path / "later", slices=3, size=32, study_instance_uid=study, seed=1
            )
            for path in later:
                ingest_file(runtime, facility, path)
            expected |= dataset_bytes_by_uid(later)
            wait.until(
                lambda: route_progress(runtime)["DEST"]["sent"] == len(expected),
                what="the new instances forwarded once the study is stable again",
                timeout=30,
            )
            received = dataset_bytes_by_uid(scp.files())
    finally:
        periodic.stop()
        runtime.close()
    assert received == expected
    assert set(attempts(runtime).values()) == {1}
