"""Routing on the in-process queue (what `noctis serve` runs): stable studies reach dcmtk's
storescp byte for byte in their own transfer syntax (also through stable detection itself); a
destination refusing some instances gets the rest, the refused ones end as dead letters with
the reason, and a retry of the dead letters delivers them; a destination refusing a syntax
gets the instance decoded where a codec can, or a dead letter that says why."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import (
    CTImageStorage,
    EnhancedMRImageStorage,
    MRImageStorage,
    SecondaryCaptureImageStorage,
)
from routing_support import (
    RefusingSCP,
    add_route,
    attempts,
    dataset_bytes_by_uid,
    facility_with_destinations,
    route_progress,
)

from noctis.core.deletion import Actor, Target, delete
from noctis.core.queue import ROUTE_STUDY, InProcessQueue
from noctis.core.runtime import Runtime
from noctis.core.transfers import retry_dead
from noctis.index.routing import Transfer
from noctis.worker.forward import kick
from noctis.worker.inprocess import register_tasks, start_periodic
from support import wait
from support.archive import embedded_settings, open_runtime
from support.dcmtk import StoreSCP
from support.dicomdata import generate_ct_series, sop_instance_uid, transfer_syntax_samples
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


def test_a_destination_refusing_a_syntax_gets_it_decoded_or_a_clear_reason(
    tmp_path: Path,
) -> None:
    """Stored compressed, deflated or big endian, an instance goes decoded to little endian
    to a destination that accepts only that (same SOP Instance UID); what no codec can convert
    (big endian raw pixels) or whose SOP class the destination refuses is a dead letter that
    says why, and everything else arrives."""
    runtime = _embedded(tmp_path)
    little_endian = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
    plain = RefusingSCP(
        "PLAIN",
        refuse=lambda uid: False,
        contexts={
            str(sop): little_endian
            for sop in (
                CTImageStorage,
                MRImageStorage,
                SecondaryCaptureImageStorage,
                EnhancedMRImageStorage,
            )
        },  # and no Ultrasound Image Storage at all
    ).start()
    samples = transfer_syntax_samples(tmp_path / "samples")
    try:
        facility = facility_with_destinations(runtime, "east", {"PLAIN": plain.port})
        add_route(runtime, "plain", facility="east", destinations=["PLAIN"], retry=FAST_RETRY)
        studies = {
            str(ingest_file(runtime, facility, p).header.study_instance_uid)
            for p in samples.values()
        }
        for study in studies:
            runtime.queue.send(ROUTE_STUDY, facility="east", study_instance_uid=study)
        runtime.drain_tasks()
    finally:
        plain.stop()
    uids = {syntax: sop_instance_uid(path) for syntax, path in samples.items()}
    big_endian, rle_ultrasound = uids["1.2.840.10008.1.2.2"], uids["1.2.840.10008.1.2.5"]
    assert set(plain.received) == set(uids.values()) - {big_endian, rle_ultrasound}
    assert set(plain.syntaxes.values()) <= set(little_endian)
    for syntax, uid in uids.items():
        if uid in plain.received and syntax in little_endian:
            assert plain.received[uid] == dataset_bytes_by_uid([samples[syntax]])[uid]
    decoded = dcmread(samples["1.2.840.10008.1.2.4.90"])  # JPEG 2000 lossless, CT
    decoded.decompress(generate_instance_uid=False)
    # The decoded instance keeps its UID, and its pixels are the stored ones, decoded.
    assert decoded.PixelData in plain.received[uids["1.2.840.10008.1.2.4.90"]]
    with runtime.sessions() as session:
        dead = {
            t.sop_instance_uid: t.last_error for t in session.query(Transfer) if t.state == "dead"
        }
    assert set(dead) == {big_endian, rle_ultrasound}
    assert "cannot be converted" in dead[big_endian]
    assert "in no transfer syntax" in dead[rle_ultrasound]
    assert {attempts(runtime)[uid] for uid in dead} == {1}  # refused at once, not retried
    runtime.close()


def test_a_destination_refusing_every_context_offered_is_not_taken_for_down(
    tmp_path: Path,
) -> None:
    """A batch holding only a SOP class the destination refuses (it answers, accepting none
    of the contexts: pynetdicom aborts) is a dead letter at once that says why; the
    destination is not postponed as if unreachable, and the next study goes at once."""
    runtime = _embedded(tmp_path)
    plain = RefusingSCP(
        "PLAIN",
        refuse=lambda uid: False,
        contexts={str(CTImageStorage): ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]},
    ).start()
    samples = transfer_syntax_samples(tmp_path / "samples")
    ultrasound, ct = samples["1.2.840.10008.1.2.5"], samples["1.2.840.10008.1.2.1"]
    try:
        facility = facility_with_destinations(runtime, "east", {"PLAIN": plain.port})
        add_route(runtime, "plain", facility="east", destinations=["PLAIN"], retry=FAST_RETRY)
        for path in (ultrasound, ct):  # one study after the other
            study = str(ingest_file(runtime, facility, path).header.study_instance_uid)
            runtime.queue.send(ROUTE_STUDY, facility="east", study_instance_uid=study)
            runtime.drain_tasks()
    finally:
        plain.stop()
    assert set(plain.received) == {sop_instance_uid(ct)}
    with runtime.sessions() as session:
        dead = {
            t.sop_instance_uid: t.last_error for t in session.query(Transfer) if t.state == "dead"
        }
    assert list(dead) == [sop_instance_uid(ultrasound)]
    assert "in no transfer syntax" in dead[sop_instance_uid(ultrasound)]
    assert attempts(runtime)[sop_instance_uid(ultrasound)] == 1  # refused at once, not retried
    runtime.close()


def test_a_study_deleted_and_sent_again_is_routed_again(tmp_path: Path) -> None:
    """A study routed, deleted (its transfers go with it), then stored again: the destination
    gets it a second time, and nothing of the deleted copy is left to fail as a dead letter."""
    runtime = _embedded(tmp_path)
    destination = RefusingSCP("PACS", refuse=lambda uid: False).start()
    try:
        facility = facility_with_destinations(runtime, "east", {"PACS": destination.port})
        add_route(runtime, "to-pacs", facility="east", destinations=["PACS"], retry=FAST_RETRY)
        files = generate_ct_series(tmp_path / "ct", slices=4, size=32)
        expected = dataset_bytes_by_uid(files)

        def store_and_route(times: int) -> str:
            results = [ingest_file(runtime, facility, path) for path in files]
            study = str(results[0].header.study_instance_uid)
            runtime.queue.send(ROUTE_STUDY, facility="east", study_instance_uid=study)

            def delivered() -> bool:
                runtime.drain_tasks()
                return route_progress(runtime)["PACS"]["sent"] == times * len(files)

            wait.until(
                delivered,
                timeout=20,
                what=f"the study delivered ({times})",
                context=lambda: str(route_progress(runtime)),
            )
            return study

        study = store_and_route(1)
        assert destination.received == expected
        deleted = delete(runtime, Target(facility.id, study), Actor("admin", "user", "127.0.0.1"))
        assert deleted.instances == len(files)
        with runtime.sessions() as session:
            assert session.query(Transfer).count() == 0  # forgotten with the instances
        store_and_route(2)
        arrivals = Counter(uid for uid, code in destination.answered if code == 0)
        assert arrivals == {uid: 2 for uid in expected}  # the second copy was routed too
        assert route_progress(runtime)["PACS"]["dead"] == 0
        assert route_progress(runtime)["PACS"]["sent"] == 2 * len(files)
    finally:
        destination.stop()
        runtime.close()
