"""The notification scenario: what fanning events out and calling a webhook costs.

`python bench/run.py notify [--quick]`

An index (SQLite, then PostgreSQL with its durable defaults) with one facility of 200 users
(radiologists, facility administrators, referring physicians, technologists) and one
webhook (a `http.server` on 127.0.0.1 answering 200 at once) receives N STAT events in one
transaction. Measured: the fan-out of all of them (each event becomes ~100 in-app
notifications and one webhook delivery), their delivery (signed HTTP POSTs, one worker, one
at a time as the periodic job sends them), and a tick with nothing to do (the steady-state
cost of the periodic job every second).
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import backing
from bench.procs import BenchError

USERS = 200
ROLES = ("radiologist", "facility-admin", "referring-physician", "technologist")
SECRET = "bench-webhook-secret-0123456789"


@dataclass
class NotifyResult:
    database: str
    events: int
    users: int
    inbox_rows: int = 0
    fan_out_s: float = 0.0
    deliver_s: float = 0.0
    idle_tick_ms: float = 0.0
    error: str = ""

    def row(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Ok(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _users(runtime: Any, facility_id: int) -> None:
    from noctis.index.accounts import User, UserFacility

    with runtime.engine.begin() as conn:
        conn.execute(
            User.__table__.insert(),
            [
                {"username": f"user{n}", "role": ROLES[n % len(ROLES)], "source": "local"}
                | {"display_name": "", "enabled": True}
                for n in range(USERS)
            ],
        )
        ids = conn.execute(User.__table__.select().with_only_columns(User.id)).scalars().all()
        conn.execute(
            UserFacility.__table__.insert(),
            [{"user_id": user_id, "facility_id": facility_id} for user_id in ids],
        )


def measure(database: str, url: str, data_dir: Path, events: int, hook_url: str) -> NotifyResult:
    from sqlalchemy import func, select

    from noctis.core.facilities import apply_facility
    from noctis.core.notifications import NotificationKind, notify
    from noctis.core.notify_fanout import fan_out
    from noctis.core.notify_settings import store_rest_receivers
    from noctis.core.queue import NullQueue
    from noctis.core.runtime import Runtime
    from noctis.index.migrate import upgrade
    from noctis.index.notify import NotificationDelivery, UserNotification
    from noctis.settings import Settings
    from noctis.specs.facility import FacilitySpec
    from noctis.specs.notifications import NotificationsSpec
    from noctis.worker.notify import notifications_tick

    upgrade(url)
    runtime = Runtime.open(Settings(data_dir=data_dir, database_url=url), queue=NullQueue())
    try:
        with runtime.sessions.begin() as session:
            facility = apply_facility(session, "bench", FacilitySpec())
            spec = NotificationsSpec.model_validate({"webhooks": [{"name": "w", "url": hook_url}]})
            store_rest_receivers(session, facility, spec, {"w": SECRET})
            facility_id = facility.id
        _users(runtime, facility_id)
        with runtime.sessions.begin() as session:
            for n in range(events):
                notify(
                    session,
                    NotificationKind.STAT_ARRIVED,
                    facility_id=facility_id,
                    title=f"STAT study {n}",
                    study_instance_uid=f"1.2.826.0.1.3680043.10.9.{n}",
                )
        result = NotifyResult(database, events, USERS)
        began = time.perf_counter()
        while fan_out(runtime):
            pass
        result.fan_out_s = time.perf_counter() - began

        def sent() -> int:
            with runtime.sessions() as session:
                return int(
                    session.scalar(
                        select(func.count())
                        .select_from(NotificationDelivery)
                        .where(NotificationDelivery.state == "sent")
                    )
                    or 0
                )

        began = time.perf_counter()
        for _ in range(10):  # a tick yields after 30 s: more ticks for a long backlog
            notifications_tick(runtime)
            if sent() == events:
                break
        result.deliver_s = time.perf_counter() - began
        with runtime.sessions() as session:
            result.inbox_rows = int(
                session.scalar(select(func.count()).select_from(UserNotification)) or 0
            )
        if sent() != events:
            raise BenchError(f"{sent()} webhook calls made, expected {events}")
        began = time.perf_counter()
        notifications_tick(runtime)
        result.idle_tick_ms = (time.perf_counter() - began) * 1000
        return result
    finally:
        runtime.close()


def main(console: Console, events: int) -> list[NotifyResult]:
    results = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hook_url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        with tempfile.TemporaryDirectory(prefix="noctis-bench-notify-") as tmp:
            root = Path(tmp)
            for name in ("sqlite", "postgresql"):
                pg = None
                try:
                    if name == "sqlite":
                        url = f"sqlite:///{root / 'index.sqlite3'}"
                    else:
                        pg = backing.start_postgres(durable=True)
                        url = pg.create_database("notify")
                    with console.status(f"{name}: {events:,} events to {USERS} users"):
                        result = measure(name, url, root, events, hook_url)
                except (BenchError, OSError, RuntimeError, ValueError) as exc:
                    result = NotifyResult(name, events, USERS, error=str(exc))
                    console.print(f"[red]{name} failed:[/red] {exc}")
                finally:
                    if pg is not None:
                        pg.stop()
                results.append(result)
    finally:
        server.shutdown()
        server.server_close()
    table = Table(
        "index",
        "events",
        "in-app rows",
        "fan-out (s)",
        "events/s",
        "webhook calls (s)",
        "calls/s",
        "idle tick (ms)",
    )
    for r in results:
        if r.error:
            table.add_row(r.database, str(r.events), "failed", r.error[:60], "", "", "", "")
            continue
        table.add_row(
            r.database,
            f"{r.events:,}",
            f"{r.inbox_rows:,}",
            f"{r.fan_out_s:.2f}",
            f"{r.events / r.fan_out_s:.0f}",
            f"{r.deliver_s:.2f}",
            f"{r.events / r.deliver_s:.0f}",
            f"{r.idle_tick_ms:.1f}",
        )
    console.print(table)
    return results
