"""`python bench/run.py worklist`: the reading worklist's latency at 10,000 and 100,000
studies on PostgreSQL (issue 15's bar: under 100 ms at 10,000).

The index is filled directly with COPY (no objects: the worklist reads only the index): two
facilities, each study with its workflow row. The mix is a busy department's: 20% of the
studies still to be read (arrived, ready, in reading, preliminary), the rest final; 2% STAT,
8% urgent; modalities CT 40%, MR 20%, CR 25%, US 10%, NM 5%; the studies in reading or read
assigned to one of ten radiologists, one study in twenty with a note. Then `noctis api`
runs as its own process (as on Kubernetes) on a loopback port, and each request is timed from
an HTTP client (median and p95 over the runs, after warm-up runs):

- API ``GET /api/worklist`` first page (50 rows) as a radiologist of one facility: default
  (studies to read), ``mine``, ``unassigned``, ``modality=NM`` (a rare one), a text search,
  the fifth page (keyset cursor), and as an administrator over both facilities;
- the page ``GET /ui/worklist`` (server-rendered HTML) default and ``mine``;
- the periodic arrival scan (``noctis.core.worklist.ArrivalScan``) with nothing to do: its
  first pass (an anti-join over every study) and an idle pass above its watermark.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from bench.backing import start_postgres
from bench.procs import LOOPBACK, BenchError, Service, free_port, load_average

SIZES = (10_000, 100_000)
QUICK_SIZES = (10_000,)
RUNS = 40
WARMUP = 5
LIMIT = 50
READERS = [f"rad{n:02d}" for n in range(10)]
MODALITIES = ["CT"] * 8 + ["MR"] * 4 + ["CR"] * 5 + ["US"] * 2 + ["NM"]
NOCTIS = [sys.executable, "-m", "noctis.cli"]


def _fill(url: str, studies: int, seed: int = 15) -> None:
    """``studies`` studies in two facilities (north gets 60%), with workflow rows and notes."""
    from sqlalchemy import create_engine, text

    rng = random.Random(seed)
    engine = create_engine(url)
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO facility (id, name, display_name, enabled, spec, idp_groups, "
                    "created_at, updated_at) VALUES (1, 'north', 'North', true, '{}', '[]', "
                    ":t, :t), (2, 'south', 'South', true, '{}', '[]', :t, :t)"
                ),
                {"t": now},
            )
            conn.execute(text("SELECT setval('facility_id_seq', 2)"))
            raw = conn.connection.driver_connection
            assert raw is not None
            with raw.cursor() as cursor:
                _copy_rows(cursor, rng, studies, now)
            for table in ("patient", "study", "study_note"):
                conn.execute(
                    text(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))")
                )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    finally:
        engine.dispose()


def _copy_rows(cursor: Any, rng: random.Random, studies: int, now: datetime) -> None:
    start = now - timedelta(days=365)
    span = (now - start).total_seconds()
    with cursor.copy(
        "COPY patient (id, facility_id, patient_id, issuer_of_patient_id, patient_name, "
        "patient_birth_date, patient_sex) FROM STDIN"
    ) as copy:
        for n in range(1, studies + 1):
            copy.write_row((n, _facility(n), f"P{n:07d}", "", _name(rng, n), "19700101", "O"))
    with cursor.copy(
        "COPY study (id, facility_id, patient_pk, patient_id, issuer_of_patient_id, "
        "patient_name, patient_birth_date, patient_sex, study_instance_uid, study_date, "
        "study_time, accession_number, study_id, study_description, referring_physician_name, "
        "modalities_in_study, number_of_series, number_of_instances, size_bytes, created_at, "
        "updated_at) FROM STDIN"
    ) as copy:
        for n in range(1, studies + 1):
            arrived = start + timedelta(seconds=span * n / studies)
            modality = rng.choice(MODALITIES)
            copy.write_row(
                (
                    n,
                    _facility(n),
                    n,
                    f"P{n:07d}",
                    "",
                    _name(rng, n),
                    "19700101",
                    "O",
                    f"1.2.826.0.1.3680043.10.15.{n}",
                    arrived.strftime("%Y%m%d"),
                    "101500",
                    f"A{n:08d}",
                    str(n % 10_000),
                    f"{modality} study",
                    "",
                    modality,
                    3,
                    300,
                    150_000_000,
                    arrived,
                    arrived,
                )
            )
    notes = []
    with cursor.copy(
        "COPY study_workflow (study_pk, facility_id, state, priority, priority_reason, "
        "critical, assignee, arrived_at, state_changed_at, updated_at) FROM STDIN"
    ) as copy:
        for n in range(1, studies + 1):
            arrived = start + timedelta(seconds=span * n / studies)
            state = "final"
            if rng.random() < 0.2:
                state = rng.choice(["arrived", "ready", "ready", "in-reading", "preliminary"])
            roll = rng.random()
            priority = 2 if roll < 0.02 else 1 if roll < 0.10 else 0
            # Read or being read: someone has it; waiting studies are nobody's.
            reading = state in ("in-reading", "preliminary", "final")
            assignee = rng.choice(READERS) if reading else None
            copy.write_row(
                (n, _facility(n), state, priority, "", False, assignee, arrived, arrived, arrived)
            )
            if rng.random() < 0.05:
                notes.append((n, _facility(n), rng.choice(READERS), "see prior", arrived))
    with cursor.copy(
        "COPY study_note (study_pk, facility_id, author, text, created_at) FROM STDIN"
    ) as copy:
        for row in notes:
            copy.write_row(row)


def _facility(n: int) -> int:
    return 1 if n % 10 < 6 else 2


def _name(rng: random.Random, n: int) -> str:
    family = rng.choice(["Smith", "Garcia", "Nguyen", "Okafor", "Müller", "Rossi", "Kim"])
    return f"{family}^Patient{n}"


def _tokens(url: str, data_dir: Path) -> dict[str, str]:
    """Users (a radiologist of north, an administrator) and a token for each."""
    from noctis.api.auth.credentials import issue_token
    from noctis.core.accounts import add_user, require_user
    from noctis.core.runtime import Runtime
    from noctis.settings import Settings

    runtime = Runtime.open(Settings(mode="embedded", data_dir=data_dir, database_url=url))
    tokens = {}
    try:
        for username, role, facilities in (
            (READERS[0], "radiologist", ["north"]),
            ("chief", "admin", []),
        ):
            add_user(runtime, username, role, password=secrets.token_hex(12), facilities=facilities)
            with runtime.sessions.begin() as session:
                tokens[username] = issue_token(session, require_user(session, username), "b")[1]
    finally:
        runtime.close()
    return tokens


def _arrival_scan(url: str, data_dir: Path, runs: int) -> dict[str, float]:
    """The periodic arrival scan with every study on the worklist already: its first pass
    (an anti-join over every study) and its later, idle passes (above the watermark)."""
    from noctis.core.runtime import Runtime
    from noctis.core.worklist import ArrivalScan
    from noctis.settings import Settings

    runtime = Runtime.open(Settings(mode="embedded", data_dir=data_dir, database_url=url))
    try:
        scan = ArrivalScan(settle_seconds=0)
        began = time.perf_counter()
        if scan.run(runtime) != 0:
            raise BenchError("the arrival scan found studies without a worklist row")
        first = (time.perf_counter() - began) * 1000
        idle = []
        for _ in range(runs):
            began = time.perf_counter()
            scan.run(runtime)
            idle.append((time.perf_counter() - began) * 1000)
    finally:
        runtime.close()
    return {"first_pass_ms": first, "idle_pass_ms": statistics.median(idle)}


def _timed(client: httpx.Client, path: str, params: dict[str, Any], runs: int) -> dict[str, Any]:
    samples = []
    body: Any = None
    for index in range(WARMUP + runs):
        began = time.perf_counter()
        response = client.get(path, params=params)
        elapsed = (time.perf_counter() - began) * 1000
        if response.status_code != 200:
            raise BenchError(f"{path} {params}: {response.status_code} {response.text[:200]}")
        if index >= WARMUP:
            samples.append(elapsed)
        body = response
    samples.sort()
    rows = (
        len(body.json()["items"]) if path.startswith("/api") else body.text.count('class="study ')
    )
    return {
        "p50_ms": statistics.median(samples),
        "p95_ms": samples[max(0, round(0.95 * len(samples)) - 1)],
        "rows": rows,
        "runs": runs,
    }


def _fifth_page_cursor(client: httpx.Client) -> str:
    cursor = None
    for _ in range(4):
        params = {"limit": LIMIT} | ({"cursor": cursor} if cursor else {})
        cursor = client.get("/api/worklist", params=params).json()["next"]
        if cursor is None:
            raise BenchError("fewer than five pages of studies to read")
    return str(cursor)


def measure(url: str, root: Path, studies: int, runs: int) -> dict[str, Any]:
    from noctis.index.migrate import upgrade

    upgrade(url)
    began = time.monotonic()
    _fill(url, studies)
    fill_s = time.monotonic() - began
    tokens = _tokens(url, root)
    scan = _arrival_scan(url, root, runs)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOCTIS_")}
    env |= {
        "NOCTIS_MODE": "embedded",
        "NOCTIS_DATA_DIR": str(root),
        "NOCTIS_DATABASE_URL": url,
        "NOCTIS_API_HOST": LOOPBACK,
        "NOCTIS_API_PORT": str(port),
        "NOCTIS_SECRET_KEY": secrets.token_hex(32),
        "NOCTIS_VIEWER_DIR": str(root / "no-viewer"),
    }
    api = Service("noctis-api", [*NOCTIS, "api"], log_path=root / "api.log", env=env, cwd=root)
    api.start()
    base = f"http://{LOOPBACK}:{port}"
    results: dict[str, Any] = {"studies": studies, "fill_s": round(fill_s, 1), "scan": scan}
    try:

        def answers() -> bool:
            try:
                return httpx.get(f"{base}/api/worklist", timeout=2).status_code == 401
            except httpx.HTTPError:
                return False

        api.wait_ready(answers, timeout=60)
        rad = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {tokens[READERS[0]]}"}, timeout=30
        )
        admin = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {tokens['chief']}"}, timeout=30
        )
        with rad, admin:
            cases = {
                "api default": (rad, "/api/worklist", {}),
                "api mine": (rad, "/api/worklist", {"mine": "true"}),
                "api unassigned": (rad, "/api/worklist", {"unassigned": "true"}),
                "api modality=NM": (rad, "/api/worklist", {"modality": "NM"}),
                "api q=garcia": (rad, "/api/worklist", {"q": "garcia"}),
                "api page 5": (rad, "/api/worklist", {"cursor": _fifth_page_cursor(rad)}),
                "api admin, both facilities": (admin, "/api/worklist", {}),
                "page default": (rad, "/ui/worklist", {}),
                "page mine": (rad, "/ui/worklist", {"mine": "true"}),
            }
            for name, (client, path, params) in cases.items():
                results[name] = _timed(client, path, {"limit": LIMIT} | params, runs)
    finally:
        api.stop()
    return results


def main(console: Console, results_dir: Path, *, quick: bool) -> int:
    sizes = QUICK_SIZES if quick else SIZES
    runs = 15 if quick else RUNS
    load_before = list(load_average())
    results: dict[str, dict[str, Any]] = {}
    server = start_postgres(durable=True)
    try:
        with tempfile.TemporaryDirectory(prefix="noctis-bench-worklist-") as tmp:
            for studies in sizes:
                console.print(f"PostgreSQL: {studies:,} studies")
                url = server.create_database(f"bench_worklist_{studies}")
                root = Path(tmp) / str(studies)
                root.mkdir()
                results[str(studies)] = measure(url, root, studies, runs)
    except BenchError as exc:
        console.print(f"[red]{exc}[/red]")
        return 1
    finally:
        server.stop()
    table = Table(title=f"Worklist latency on PostgreSQL (ms, {runs} runs; p50 / p95)")
    table.add_column("request")
    for studies in results:
        table.add_column(f"{int(studies):,} studies", justify="right")
    first = next(iter(results.values()))
    names = [name for name, value in first.items() if isinstance(value, dict) and name != "scan"]
    for name in names:
        table.add_row(
            name,
            *(f"{r[name]['p50_ms']:.1f} / {r[name]['p95_ms']:.1f}" for r in results.values()),
        )
    console.print(table)
    for studies, row in results.items():
        console.print(
            f"arrival scan at {int(studies):,} studies: first pass (anti-join) "
            f"{row['scan']['first_pass_ms']:.1f} ms, idle pass {row['scan']['idle_pass_ms']:.2f} ms"
        )
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-worklist.json"
    document = {
        "suite": "worklist",
        "load_before": load_before,
        "load_after": list(load_average()),
        "results": results,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"results: {path}")
    return 0
