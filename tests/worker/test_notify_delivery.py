"""Webhooks and e-mail, delivered by the worker's periodic job to real receivers on
127.0.0.1: a webhook answering 500 at first then 200 gets the signed call again until it
takes it; one that never does ends dead, visible over REST and /metrics, and is retried by
an administrator; e-mail goes through a real SMTP server; the patient's identity leaves
only when the facility opts in. Run by `noctis serve`'s in-process runner and by Celery
workers on a real Redis."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from fastapi.testclient import TestClient
from sqlalchemy import select
from worker_support import celery_archive

from noctis.api.app import create_app
from noctis.core import notify_delivery
from noctis.core.facilities import apply_facility
from noctis.core.index_secrets import sealer
from noctis.core.ingest import FacilityRef
from noctis.core.notify_fanout import fan_out
from noctis.core.notify_inbox import Preferences, set_preferences, user_id_of
from noctis.core.notify_settings import store_rest_receivers
from noctis.core.roles import Role
from noctis.core.runtime import Runtime
from noctis.core.workflow import Actor, Priority, flag_critical, set_priority
from noctis.index.models import Facility, Study
from noctis.index.notify import NotificationDelivery
from noctis.specs.facility import FacilitySpec
from noctis.specs.notifications import NotificationsSpec
from noctis.worker.celery_app import create_celery
from noctis.worker.periodic import PeriodicRunner
from noctis.worker.tasks import PERIODIC_JOBS
from support import wait
from support.archive import embedded_settings, open_runtime, register_facility
from support.cluster.pki import ensure_ca, ensure_certificate
from support.dicomdata import small_ct
from support.incoming import ingest_file
from support.notify_receivers import SmtpReceiver, WebhookReceiver
from support.web import create_user, token_for

SECRET = "a-webhook-secret-of-some-length"
FAST = {
    "notify_tick_seconds": 0.2,
    "notify_backoff_seconds": 0.2,
    "notify_backoff_max_seconds": 0.5,
    # The receivers here listen on 127.0.0.1, where webhook calls never go by default.
    "webhook_blocked_networks": ["169.254.0.0/16"],
}
NOTIFY_JOBS = [job for job in PERIODIC_JOBS if job.name == "notifications"]


def _archive(tmp_path: Path, **overrides: object) -> tuple[Runtime, FacilityRef]:
    (tmp_path / "data").mkdir(exist_ok=True)
    runtime = open_runtime(embedded_settings(tmp_path / "data", **(FAST | overrides)))
    north = register_facility(runtime, "north")
    return runtime, north


def _receivers(runtime: Runtime, spec: dict, secrets: dict[str, str]) -> None:
    with runtime.sessions.begin() as session:
        facility = session.scalars(select(Facility).where(Facility.name == "north")).one()
        store_rest_receivers(
            session,
            facility,
            NotificationsSpec.model_validate(spec),
            secrets,
            sealer(runtime.settings),
        )


def _study(runtime: Runtime, facility: FacilityRef, tmp_path: Path) -> str:
    path = tmp_path / "ct.dcm"
    small_ct(PatientName="DOE^JANE", PatientID="PID-4711").save_as(path, enforce_file_format=True)
    return str(ingest_file(runtime, facility, path).header.study_instance_uid)


def _stat(runtime: Runtime, study_uid: str, *, critical: bool = False) -> None:
    with runtime.sessions.begin() as session:
        study = session.scalars(select(Study).where(Study.study_instance_uid == study_uid)).one()
        if critical:
            flag_critical(session, study, actor=Actor("ai-node"), reason="bleed")
        else:
            set_priority(session, study, Priority.STAT, actor=Actor("tech"), reason="trauma")


def _hook(url: str, kinds: list[str] | None = None) -> dict:
    hook: dict = {"name": "pager", "url": url}
    if kinds is not None:
        hook["kinds"] = kinds
    return hook


def test_a_webhook_failing_at_first_gets_the_signed_call_until_it_takes_it(
    tmp_path: Path,
) -> None:
    runtime, north = _archive(tmp_path)
    with WebhookReceiver(SECRET, fail_first=2) as hook:
        _receivers(runtime, {"webhooks": [_hook(hook.url)]}, {"pager": SECRET})
        study = _study(runtime, north, tmp_path)
        runner = PeriodicRunner(runtime, NOTIFY_JOBS).start()  # as `noctis serve` runs it
        try:
            _stat(runtime, study)
            wait.until(hook.succeeded, timeout=20, what="the webhook taking the call")
        finally:
            runner.stop()
    assert [call.status for call in hook.calls] == [500, 500, 200]
    assert all(call.signature_ok for call in hook.calls)
    payload = hook.calls[-1].payload
    assert payload["kind"] == "stat-arrived" and payload["facility"] == "north"
    assert payload["studyInstanceUID"] == study and payload["title"] == "STAT study arrived"
    # No patient data leaves unless the facility opts in.
    assert (
        "DOE" not in hook.calls[-1].body.decode() and "PID-4711" not in hook.calls[-1].body.decode()
    )
    assert len({call.body for call in hook.calls}) == 1  # the same event each time
    runtime.close()


def test_a_webhook_that_never_answers_ends_dead_visible_and_retried_by_an_admin(
    tmp_path: Path,
) -> None:
    runtime, north = _archive(tmp_path, notify_attempts=3)
    create_user(runtime, "admin", "admin", [], password="a-long-enough-password")
    create_user(runtime, "rad_north", "radiologist", ["north"], password="a-long-enough-pw")
    admin, rad = token_for(runtime, "admin"), token_for(runtime, "rad_north")
    with WebhookReceiver(SECRET, fail_first=1000) as hook:
        _receivers(runtime, {"webhooks": [_hook(hook.url)]}, {"pager": SECRET})
        runner = PeriodicRunner(runtime, NOTIFY_JOBS).start()
        try:
            _stat(runtime, _study(runtime, north, tmp_path))
            api = TestClient(create_app(runtime.settings, runtime))
            auth = {"Authorization": f"Bearer {admin}"}

            def dead() -> list:
                found = api.get("/api/notifications/deliveries?state=dead", headers=auth)
                return found.json()["deliveries"]

            [delivery] = wait.until(dead, timeout=20, what="the delivery dead")
            assert delivery["attempts"] == 3 and len(hook.calls) == 3
            assert delivery["lastError"].endswith(f"HTTP 500 from {hook.url}")
            assert (delivery["channel"], delivery["target"]) == ("webhook", "pager")
            metrics = api.get("/metrics").text
            labels = 'channel="webhook",facility="north",state="dead"'
            assert f"noctis_notification_deliveries{{{labels}}} 1.0" in metrics
            refused = api.get(
                "/api/notifications/deliveries", headers={"Authorization": f"Bearer {rad}"}
            )
            assert refused.status_code == 403
            hook.fail_first = 0
            assert api.post("/api/notifications/deliveries/retry", headers=auth).json() == {
                "retried": 1
            }
            wait.until(hook.succeeded, timeout=20, what="the retried call taken")
        finally:
            runner.stop()
    runtime.close()


def test_e_mail_goes_through_smtp_with_the_identity_only_when_the_facility_opts_in(
    tmp_path: Path,
) -> None:
    with SmtpReceiver() as smtp:
        runtime, north = _archive(
            tmp_path,
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            smtp_security="none",
            smtp_from="pacs@hospital.test",
        )
        create_user(runtime, "rad_north", "radiologist", ["north"], password="a-long-enough-pw")
        with runtime.sessions.begin() as session:
            set_preferences(
                session,
                user_id_of(session, "rad_north"),
                Role.RADIOLOGIST,
                Preferences(None, ["in-app", "email"], "rad@hospital.test"),
            )
        _receivers(
            runtime,
            {
                "emailRecipients": [
                    {"address": "oncall@hospital.test", "kinds": ["critical-result"]}
                ],
                "includePatientIdentity": True,
            },
            {},
        )
        runner = PeriodicRunner(runtime, NOTIFY_JOBS).start()
        try:
            _stat(runtime, _study(runtime, north, tmp_path), critical=True)

            def mails() -> dict:
                found = {tuple(to): message for to, message in smtp.messages}
                # rad: critical-result and stat-arrived; on-call: critical-result only
                return found if len(smtp.messages) >= 3 else {}

            wait.until(mails, timeout=20, what="three e-mails")
        finally:
            runner.stop()
    received = sorted((to[0], m["Subject"]) for to, m in smtp.messages)
    assert received == [
        ("oncall@hospital.test", "[Noctis] Critical result: DOE, JANE · CT"),
        ("rad@hospital.test", "[Noctis] Critical result: DOE, JANE · CT"),
        ("rad@hospital.test", "[Noctis] STAT study: DOE, JANE · CT"),
    ]
    body = smtp.messages[0][1].get_content()
    assert "PID-4711" in body and "Reason: bleed" in body
    assert all(m["From"] == "pacs@hospital.test" for _, m in smtp.messages)
    runtime.close()


@pytest.mark.usefixtures("redis_server")
def test_celery_workers_deliver_a_facility_resources_webhook_once(
    tmp_path: Path, broker: str
) -> None:
    """The Facility resource declares the webhook (secret by reference, given to the worker
    as NOCTIS_WEBHOOK_SECRETS__north__pager). A Celery worker alone delivers the first event,
    again after a 500; then a second replica's runner joins and the next event is still
    called once."""
    settings = embedded_settings(
        tmp_path / "data",
        broker_url=broker,
        webhook_secrets={"north": {"pager": SECRET}},
        **FAST,
    )
    (tmp_path / "data").mkdir()
    runtime = celery_archive(settings)
    with WebhookReceiver(SECRET, fail_first=1) as hook:
        spec = FacilitySpec.model_validate(
            {
                "notifications": {
                    "webhooks": [
                        {**_hook(hook.url), "secretRef": {"name": "hooks", "key": "pager"}}
                    ]
                }
            }
        )
        with runtime.sessions.begin() as session:
            north = apply_facility(session, "north", spec)
            north_ref = FacilityRef(north.id, north.name)
        study = _study(runtime, north_ref, tmp_path)
        app = create_celery(settings, runtime, periodic_jobs=PERIODIC_JOBS)
        with start_worker(app, pool="threads", perform_ping_check=False):
            for _ in range(3):
                _stat(runtime, study)  # STAT once; the other two change nothing
            wait.until(hook.succeeded, timeout=30, what="the webhook taking the call")
            replica = open_runtime(settings)  # a second worker process's runtime
            other = PeriodicRunner(replica, NOTIFY_JOBS).start()
            try:
                _stat(runtime, study, critical=True)
                wait.until(lambda: len(hook.succeeded()) == 2, timeout=30, what="the next call")
                time.sleep(1.5)  # ticks of both: none may call again
            finally:
                other.stop()
                replica.close()
    assert [call.status for call in hook.calls] == [500, 200, 200]
    assert [call.payload["kind"] for call in hook.calls] == [
        "stat-arrived",
        "stat-arrived",
        "critical-result",
    ]
    assert all(call.signature_ok for call in hook.calls)
    assert {call.payload["studyInstanceUID"] for call in hook.calls} == {study}
    runtime.close()


@pytest.mark.parametrize("security", ["starttls", "tls"])
# aiosmtpd cannot tell its implicit TLS from plain text, and warns: the connection is TLS.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_e_mail_over_tls_with_a_login_and_the_servers_certificate_checked(
    tmp_path: Path, security: str
) -> None:
    ca = ensure_ca(tmp_path / "pki", "smtp-ca")
    server = ensure_certificate(ca, tmp_path / "pki", "smtp", "smtp", server_ips=("127.0.0.1",))
    implicit = security == "tls"
    with SmtpReceiver(tls=server, implicit_tls=implicit, login=("noctis", "smtp-password")) as smtp:
        runtime, north = _archive(
            tmp_path,
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            smtp_security=security,
            smtp_username="noctis",
            smtp_password="smtp-password",
            smtp_ca_file=ca.cert,
        )
        _receivers(runtime, {"emailRecipients": [{"address": "oncall@hospital.test"}]}, {})
        runner = PeriodicRunner(runtime, NOTIFY_JOBS).start()
        try:
            _stat(runtime, _study(runtime, north, tmp_path))
            wait.until(lambda: smtp.messages, timeout=20, what="the e-mail")
        finally:
            runner.stop()
    [(to, message)] = smtp.messages
    assert to == ["oncall@hospital.test"] and message["Subject"] == "[Noctis] STAT study arrived"
    assert "DOE" not in message.get_content()  # no opt-in: no patient data in the mail
    runtime.close()


def test_a_delivery_whose_worker_died_is_taken_back_after_its_lease_and_sent(
    tmp_path: Path,
) -> None:
    runtime, north = _archive(tmp_path, notify_claim_seconds=0.5)
    with WebhookReceiver(SECRET) as hook:
        _receivers(runtime, {"webhooks": [_hook(hook.url)]}, {"pager": SECRET})
        _stat(runtime, _study(runtime, north, tmp_path))
        fan_out(runtime)
        dead_worker = notify_delivery.claim(runtime, 10)  # claimed, then never finished
        assert len(dead_worker.deliveries) == 1
        assert notify_delivery.claim(runtime, 10).deliveries == []  # held under its lease
        runner = PeriodicRunner(runtime, NOTIFY_JOBS).start()
        try:
            wait.until(hook.succeeded, timeout=20, what="the call made by another worker")
        finally:
            runner.stop()
        # The dead worker's late outcome no longer counts: the claim is not its own any more.
        late = notify_delivery.finish(
            runtime, dead_worker, dead_worker.deliveries[0], error="too late"
        )
    with runtime.sessions() as session:
        [row] = session.scalars(select(NotificationDelivery)).all()
    assert (row.state, row.attempts, late) == ("sent", 2, None)
    assert len(hook.calls) == 1
    runtime.close()


def _called_by_name(
    runtime: Runtime, north: FacilityRef, tmp_path: Path, hook: WebhookReceiver
) -> str:
    """The receiver's URL naming localhost instead of its address, set as the facility's
    webhook; a STAT event delivered to it by the worker's job. Returns that URL."""
    by_name = hook.url.replace("127.0.0.1", "localhost")
    _receivers(runtime, {"webhooks": [_hook(by_name)]}, {"pager": SECRET})
    _stat(runtime, _study(runtime, north, tmp_path))
    runner = PeriodicRunner(runtime, NOTIFY_JOBS).start()
    try:
        wait.until(hook.succeeded, timeout=20, what=f"the call to {by_name}")
    finally:
        runner.stop()
    return by_name


def test_a_webhook_into_a_blocked_network_is_never_called(tmp_path: Path) -> None:
    """By default no call goes to this host (nor link-local, the cloud's metadata endpoint),
    whether the URL names the address or a name that resolves to it: the delivery is dead at
    once, saying why, and the receiver hears nothing."""
    runtime, north = _archive(tmp_path, webhook_blocked_networks=["127.0.0.0/8", "::1/128"])
    with WebhookReceiver(SECRET) as hook:
        by_name = hook.url.replace("127.0.0.1", "localhost")
        hooks = [_hook(hook.url), {**_hook(by_name), "name": "by-name"}]
        _receivers(runtime, {"webhooks": hooks}, {"pager": SECRET, "by-name": SECRET})
        _stat(runtime, _study(runtime, north, tmp_path))
        runner = PeriodicRunner(runtime, NOTIFY_JOBS).start()
        try:

            def finished() -> list[NotificationDelivery]:
                with runtime.sessions() as session:
                    rows = session.scalars(select(NotificationDelivery)).all()
                return list(rows) if rows and all(r.state == "dead" for r in rows) else []

            rows = wait.until(finished, timeout=20, what="both deliveries dead")
        finally:
            runner.stop()
    assert hook.calls == []
    assert {(row.target, row.attempts) for row in rows} == {("pager", 1), ("by-name", 1)}
    assert all("127.0.0.0/8" in row.last_error for row in rows)
    assert all("NOCTIS_WEBHOOK_BLOCKED_NETWORKS" in row.last_error for row in rows)
    runtime.close()


def test_a_webhook_call_connects_to_the_checked_address_with_the_urls_host(
    tmp_path: Path,
) -> None:
    """The call goes to the address checked (pinned), and the receiver still sees the URL's
    own host in the Host header."""
    runtime, north = _archive(tmp_path)
    with WebhookReceiver(SECRET) as hook:
        by_name = _called_by_name(runtime, north, tmp_path, hook)
    port = by_name.split(":")[2].split("/")[0]
    assert hook.calls[0].headers["host"] == f"localhost:{port}"
    assert hook.calls[0].signature_ok
    runtime.close()


def test_an_https_webhook_is_called_at_the_checked_address_with_its_certificate_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pinned to the address it resolved to, the call still asks for the URL's host as the
    TLS server name, and the receiver's certificate (issued to that name only, no IP) is
    verified against it."""
    ca = ensure_ca(tmp_path / "pki", "ca")
    server = ensure_certificate(
        ca, tmp_path / "pki", "hooks", "localhost", server_names=("localhost",)
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.cert))  # the worker's client trusts the test CA
    runtime, north = _archive(tmp_path)
    with WebhookReceiver(SECRET, tls=server) as hook:
        by_name = _called_by_name(runtime, north, tmp_path, hook)
    assert by_name.startswith("https://localhost:")
    assert hook.server_names == ["localhost"]
    assert hook.calls[0].signature_ok and hook.calls[0].headers["host"].startswith("localhost:")
    runtime.close()
