"""Notifications: the worker's periodic jobs that fan events out, deliver and forget them.

``notifications_tick`` (every ``notify_tick_seconds``): takes back the deliveries whose
worker died, fans out every new event of the outbox (``noctis.core.notify_fanout``), then
sends the due webhook calls (HTTP POST, JSON, signed with the webhook's secret:
``noctis.core.notify_payload``) and e-mails (SMTP), a few at a time under a lease, recording
each outcome (``noctis.core.notify_delivery``: retried with exponential backoff, dead after
``notify_attempts``). ``notifications_prune`` (every ``notify_prune_seconds``) forgets the
events older than ``notify_keep_days`` that are delivered or dead.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from noctis.core import notify_delivery
from noctis.core.notify_delivery import Claim, ClaimedDelivery
from noctis.core.notify_destinations import BlockedDestination, networks, pin
from noctis.core.notify_fanout import fan_out
from noctis.core.notify_payload import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    build_payload,
    email_message,
    encode,
    signature,
)
from noctis.core.notify_settings import facility_receivers
from noctis.core.runtime import Runtime
from noctis.index.models import Facility
from noctis.index.notify import Channel
from noctis.index.workflow import NotificationEvent
from noctis.settings import Settings

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

BATCH = 5  # deliveries claimed at once: each may take up to the timeout
TICK_SECONDS = 30.0  # a tick gives the other periodic jobs their turn after this


class Undeliverable(Exception):
    """No later attempt can succeed (the webhook was removed, it has no secret): dead now.
    So is a call to a blocked network (`BlockedDestination`)."""


@dataclass(frozen=True)
class Prepared:
    channel: str
    target: str
    body: bytes = b""
    url: str = ""
    secret: str = ""
    message: object = None


def notifications_tick(runtime: Runtime) -> None:
    taken_back = notify_delivery.take_back_stale(runtime)
    if taken_back:
        log.warning("notifications: %d deliveries taken back from a stopped worker", taken_back)
    started = time.monotonic()
    while fan_out(runtime):
        if time.monotonic() - started > TICK_SECONDS:
            return
    claim = notify_delivery.claim(runtime, BATCH)
    if not claim.deliveries:
        return  # the usual tick: no client made (its TLS context costs tens of ms)
    # One client for the tick: calls to the same receiver reuse its connection.
    with _http_client(runtime.settings) as client:
        while claim.deliveries:
            for delivery in claim.deliveries:
                deliver(runtime, claim, delivery, client)
            if time.monotonic() - started > TICK_SECONDS:
                return
            claim = notify_delivery.claim(runtime, BATCH)


def _http_client(settings: Settings) -> httpx.Client:
    import httpx  # imported when there is something to send (~4 MB per process otherwise)

    return httpx.Client(timeout=settings.notify_timeout_seconds, follow_redirects=False)


def notifications_prune(runtime: Runtime) -> int:
    """Forget notifications older than ``notify_keep_days`` (a PeriodicJob)."""
    pruned = 0
    while True:
        with runtime.sessions.begin() as session:
            count = notify_delivery.prune(session, runtime.settings.notify_keep_days)
        pruned += count
        if not count:
            break
    if pruned:
        log.info(
            "notifications: %d events older than %g days forgotten",
            pruned,
            runtime.settings.notify_keep_days,
        )
    return pruned


def deliver(runtime: Runtime, claim: Claim, delivery: ClaimedDelivery, client: httpx.Client) -> str:
    """Send one claimed delivery and record the outcome; the state it ends in."""
    try:
        prepared = _prepare(runtime, delivery)
        if prepared.channel == Channel.WEBHOOK:
            _post(client, prepared, delivery, runtime.settings)
        else:
            _mail(runtime.settings, prepared)
    except (Undeliverable, BlockedDestination) as refused:
        return _record(runtime, claim, delivery, str(refused), permanent=True)
    except Exception as failed:  # the receiver's trouble: tried again later
        return _record(runtime, claim, delivery, f"{type(failed).__name__}: {failed}")
    return _record(runtime, claim, delivery, None)


def _record(
    runtime: Runtime,
    claim: Claim,
    delivery: ClaimedDelivery,
    error: str | None,
    *,
    permanent: bool = False,
) -> str:
    state = notify_delivery.finish(runtime, claim, delivery, error=error, permanent=permanent)
    if state is None:
        log.warning(
            "notification delivery %s: held past its lease; another worker took it back",
            delivery.id,
        )
        return "taken back"
    if error is not None:
        log.warning(
            "notification delivery %s (%s %s, attempt %d) %s: %s",
            delivery.id,
            delivery.channel,
            delivery.target,
            delivery.attempts,
            state,
            error,
        )
    return state


def _prepare(runtime: Runtime, delivery: ClaimedDelivery) -> Prepared:
    settings = runtime.settings
    with runtime.sessions() as session:
        event = session.get(NotificationEvent, delivery.event_id)
        facility = session.get(Facility, delivery.facility_id)
        if event is None or facility is None:
            raise Undeliverable("the event or its facility no longer exists")
        receivers = facility_receivers(session, facility, settings)
        payload = build_payload(
            session,
            event,
            facility,
            include_identity=receivers.spec.include_patient_identity,
        )
    if delivery.channel == Channel.WEBHOOK:
        webhook = next((w for w in receivers.spec.webhooks if w.name == delivery.target), None)
        if webhook is None:
            raise Undeliverable(f"webhook {delivery.target} is no longer configured")
        secret = receivers.secret(webhook.name, settings)
        if not secret:  # not permanent: a pod of a rollout in progress may lack it
            raise RuntimeError(
                f"webhook {webhook.name} has no secret (NOCTIS_WEBHOOK_SECRETS__"
                f"{facility.name}__{webhook.name}): an unsigned call is never sent"
            )
        return Prepared(Channel.WEBHOOK, webhook.name, encode(payload), str(webhook.url), secret)
    if not settings.smtp_host:
        raise Undeliverable("no SMTP server is configured (NOCTIS_SMTP_HOST)")
    message = email_message(payload, sender=settings.smtp_from, to=delivery.target)
    return Prepared(Channel.EMAIL, delivery.target, message=message)


def _post(
    client: httpx.Client, prepared: Prepared, delivery: ClaimedDelivery, settings: Settings
) -> None:
    """POST the signed payload to the addresses its URL resolves to, once they are checked
    (`noctis.core.notify_destinations`)."""
    import httpx

    call = pin(prepared.url, networks(settings.webhook_blocked_networks))
    timestamp = str(int(time.time()))
    headers = {
        "Host": call.host_header,
        "Content-Type": "application/json",
        "User-Agent": "noctis-notifications",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(prepared.secret, timestamp, prepared.body),
        "X-Noctis-Delivery": str(delivery.id),
    }
    extensions = {"sni_hostname": call.server_name} if call.server_name else None
    response: httpx.Response | None = None
    for url in call.urls:  # a name's addresses in turn while they refuse the connection
        try:
            response = client.post(
                url, content=prepared.body, headers=headers, extensions=extensions
            )
            break
        except httpx.ConnectError:
            if url == call.urls[-1]:
                raise  # none took it: tried again later
    if response is None or not response.is_success:
        status = response.status_code if response is not None else "no answer"
        raise RuntimeError(f"HTTP {status} from {prepared.url}")


def _mail(settings: Settings, prepared: Prepared) -> None:
    assert settings.smtp_host
    timeout = settings.notify_timeout_seconds
    context = ssl.create_default_context(cafile=settings.smtp_ca_file)
    smtp: smtplib.SMTP
    if settings.smtp_security == "tls":
        smtp = smtplib.SMTP_SSL(
            settings.smtp_host, settings.smtp_port, timeout=timeout, context=context
        )
    else:
        smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
    with smtp:
        if settings.smtp_security == "starttls":
            smtp.starttls(context=context)
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
        smtp.send_message(prepared.message)  # type: ignore[arg-type]
