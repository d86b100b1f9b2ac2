"""`noctis serve` notifies too: a facility declared with `noctis facility apply` names a
webhook whose secret the process reads from NOCTIS_WEBHOOK_SECRETS__<facility>__<webhook>;
a study a modality stored (storescu) raised to STAT, then flagged critical, in transactions
of another process reaches the webhook, signed, once per event, without patient data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from sqlalchemy import select

from noctis.core.runtime import Runtime
from noctis.core.workflow import Actor, Priority, flag_critical, set_priority
from noctis.index.models import Study
from support import dcmtk, wait
from support.archive import embedded_settings
from support.dicomdata import generate_ct_series
from support.logs import ServerLogs
from support.notify_receivers import WebhookReceiver
from support.serve import EmbeddedServe

SECRET = "serve-webhook-secret-0123"


def _run(*args: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "noctis.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_noctis_serve_calls_the_declared_webhook_for_stat_and_critical(
    tmp_path: Path, server_logs: ServerLogs
) -> None:
    serve = EmbeddedServe(
        tmp_path,
        server_logs,
        {
            "NOCTIS_NOTIFY_TICK_SECONDS": "0.2",
            # The receiver listens on 127.0.0.1, where webhook calls never go by default.
            "NOCTIS_WEBHOOK_BLOCKED_NETWORKS": "169.254.0.0/16",
            "NOCTIS_WEBHOOK_SECRETS__east__pager": SECRET,
        },
    )
    serve.data_dir.mkdir()
    with WebhookReceiver(SECRET) as hook:
        declared = tmp_path / "east.yaml"
        declared.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "pacs.noctis.io/v1alpha1",
                    "kind": "Facility",
                    "metadata": {"name": "east"},
                    "spec": {
                        "applicationEntities": [
                            {"aeTitle": "CT1", "allowedCIDRs": ["127.0.0.0/8"]}
                        ],
                        "notifications": {
                            "webhooks": [
                                {
                                    "name": "pager",
                                    "url": hook.url,
                                    "secretRef": {"name": "east-hooks", "key": "pager"},
                                }
                            ]
                        },
                    },
                }
            )
        )
        _run("migrate", env=serve.env)
        _run("facility", "apply", "-f", str(declared), env=serve.env)
        runtime = Runtime.open(embedded_settings(serve.data_dir))
        try:
            with serve:
                files = generate_ct_series(tmp_path / "ct", slices=2, size=16)
                assert dcmtk.storescu(serve.port, files, calling="CT1", called="NOCTIS").ok
                with runtime.sessions.begin() as session:
                    study = session.scalars(select(Study)).one()
                    study_uid = study.study_instance_uid
                    set_priority(session, study, Priority.STAT, actor=Actor("tech"), reason="ER")
                wait.until(lambda: len(hook.calls) == 1, timeout=30, what="the STAT call")
                with runtime.sessions.begin() as session:
                    study = session.scalars(select(Study)).one()
                    flag_critical(session, study, actor=Actor("rad"), reason="bleed")
                wait.until(lambda: len(hook.calls) == 2, timeout=30, what="the critical call")
        finally:
            runtime.close()
    assert [call.payload["kind"] for call in hook.calls] == ["stat-arrived", "critical-result"]
    assert all(call.signature_ok and call.status == 200 for call in hook.calls)
    assert {call.payload["studyInstanceUID"] for call in hook.calls} == {study_uid}
    assert all("bleed" not in call.body.decode() for call in hook.calls)  # no opt-in: no detail
