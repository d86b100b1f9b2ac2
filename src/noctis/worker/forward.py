"""Forwarding: the worker's routing tasks and its periodic job.

- ``route_study`` (ROUTE_STUDY; called by the stable-study task, and sent on demand): creates
  the study's transfers for the facility's stable-trigger routes, then asks each
  destination's queue to send them.
- ``forward_to_destination`` (FORWARD_TO_DESTINATION, on ``destination_queue(ae)``): claims
  the destination's due transfers a batch at a time and sends them on one association per
  batch, until none is due or ``TASK_SECONDS`` have passed (then it sends itself again, so a
  long backlog never holds a worker thread forever). A destination that cannot be reached
  postpones its other transfers by the batch's backoff: one batch probes it per delay.
- ``routing_tick`` (a PeriodicJob, every ``route_scan_seconds``): takes back transfers whose
  worker died (lease over), creates the transfers of per-instance routes for newly stored
  instances, and asks every destination with due transfers and no worker on them to send:
  a task lost with a Redis restart or a killed worker is made good here.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from noctis.core import transfers
from noctis.core.queue import FORWARD_TO_DESTINATION, destination_queue
from noctis.core.routing import route_study as create_study_transfers
from noctis.core.routing import scan_new_instances
from noctis.core.runtime import Runtime
from noctis.index.models import ApplicationEntity
from noctis.worker.dimse_send import CannotAssociate, Item, send

log = logging.getLogger(__name__)

TASK_SECONDS = 60.0


def route_study(
    runtime: Runtime,
    *,
    facility: str,
    study_instance_uid: str,
    sop_instance_uid: str | None = None,
    **_: Any,
) -> dict[str, int]:
    created = create_study_transfers(runtime, facility, study_instance_uid, sop_instance_uid)
    kick(runtime, created)
    return created


def kick(runtime: Runtime, destinations: Any) -> None:
    for destination in destinations:
        runtime.queue.send(
            FORWARD_TO_DESTINATION,
            queue=destination_queue(destination),
            destination=destination,
        )


def routing_tick(runtime: Runtime) -> None:
    taken_back = transfers.take_back_stale(runtime)
    if taken_back:
        log.warning("routing: %d transfers taken back from a worker that stopped", taken_back)
    created = scan_new_instances(runtime)
    kick(runtime, sorted(set(created) | set(transfers.due_destinations(runtime))))


def forward_to_destination(runtime: Runtime, *, destination: str, **_: Any) -> int:
    """Send the destination's due transfers; how many were sent."""
    settings = runtime.settings
    lease = settings.route_claim_seconds
    started = time.monotonic()
    sent = 0
    while True:
        claim = transfers.claim(runtime, destination, settings.route_batch, lease)
        if not claim.transfers:
            return sent
        sent += _send_claim(runtime, destination, claim)
        if time.monotonic() - started > TASK_SECONDS:
            kick(runtime, [destination])  # the rest in a task of its own
            return sent


def _send_claim(runtime: Runtime, destination: str, claim: transfers.Claim) -> int:
    settings = runtime.settings
    outcomes: list[transfers.Outcome] = []
    sendable = []
    for claimed in claim.transfers:
        if claimed.object_key is None:
            outcomes.append(
                transfers.Outcome(
                    claimed, False, "the instance is no longer stored", permanent=True
                )
            )
        else:
            sendable.append(claimed)
    with runtime.sessions() as session:
        peer = session.execute(
            select(ApplicationEntity.host, ApplicationEntity.port).where(
                ApplicationEntity.ae_title == destination
            )
        ).first()
    if peer is None or not peer.host or not peer.port:
        reason = f"destination {destination} is no longer registered with a host and port"
        outcomes.extend(transfers.Outcome(c, False, reason) for c in sendable)
        transfers.finish(runtime, claim, outcomes)
        return 0
    spool = settings.resolved_spool_dir()
    spool.mkdir(parents=True, exist_ok=True)
    renewed = [time.monotonic()]

    def progress() -> None:
        if time.monotonic() - renewed[0] > settings.route_claim_seconds / 3:
            transfers.extend(runtime, claim, settings.route_claim_seconds)
            renewed[0] = time.monotonic()

    items = [
        Item(
            key=claimed,
            sop_class_uid=str(claimed.sop_class_uid),
            transfer_syntax_uid=str(claimed.transfer_syntax_uid),
            fetch=_fetcher(runtime, str(claimed.object_key), spool),
        )
        for claimed in sendable
    ]
    try:
        results = send(
            peer.host,
            int(peer.port),
            destination,
            settings.route_calling_ae,
            items,
            timeout=settings.route_timeout_seconds,
            progress=progress,
        )
    except CannotAssociate as exc:
        reason = str(exc)
        outcomes.extend(transfers.Outcome(c, False, reason) for c in sendable)
        transfers.finish(runtime, claim, outcomes)
        delay = max((transfers.backoff(c) for c in sendable), default=0.0)
        transfers.postpone(runtime, destination, delay, reason)
        log.warning("routing: %s; retrying in %.0f s", reason, delay)
        return 0
    except Exception as exc:  # recorded, not left to the lease: the reason shows at once
        log.exception("routing: sending to %s failed", destination)
        reason = f"sending failed: {type(exc).__name__}: {exc}"
        outcomes.extend(transfers.Outcome(c, False, reason) for c in sendable)
        transfers.finish(runtime, claim, outcomes)
        return 0
    for result in results:
        claimed = result.key
        assert isinstance(claimed, transfers.Claimed)
        outcomes.append(transfers.Outcome(claimed, result.sent, result.error, result.permanent))
    transfers.finish(runtime, claim, outcomes)
    return sum(1 for r in results if r.sent)


def _fetcher(runtime: Runtime, key: str, spool: Path) -> Any:
    def fetch() -> Path:
        with tempfile.NamedTemporaryFile(dir=spool, suffix=".dcm", delete=False) as out:
            for chunk in runtime.store.iter_chunks(key):
                out.write(chunk)
            if out.tell() % 2:
                # Only a deflated data set can have an odd length (some writers forget the
                # pad byte PS3.5 A.5 asks for); PDVs must be even, and dcmtk aborts otherwise.
                out.write(b"\x00")
        return Path(out.name)

    return fetch
