"""`python bench/run.py mwl`: Modality Worklist C-FIND latency, as a modality sees it.

The index is filled directly with N scheduled orders (100 and 10,000) of one facility,
spread over 20 days, 5 stations and 3 modalities, on SQLite and on PostgreSQL (the test
support's server, durability left on). The SCP (`noctis.scp.server.Scp`, fast DIMSE path)
listens on a free loopback port. Two queries, each timed as one whole exchange (associate,
C-FIND, every answer, release), median of RUNS:

- ``station-day``: what a modality asks every few minutes: its station AE title and today
  (about N/100 answers);
- ``patient``: PatientName=SMITH* over every date (about N/10 answers, capped at 1000);

by dcmtk's ``findscu -W`` (a process per query, TCP_NODELAY=1) and by pynetdicom.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.backing import start_postgres
from bench.procs import BenchError, load_average

SIZES = (100, 10_000)
QUICK_SIZES = (100, 1_000)
RUNS = 15
STATIONS = ("CT1", "CT2", "MR1", "US1", "US2")
DAYS = 20
CALLING = "BENCHMOD"
CALLED = "NOCTIS"
FINDSCU = "/usr/bin/findscu"
QUERIES = {
    "station-day": {"station": "CT1", "date": "20270101"},
    "patient": {"name": "SMITH*"},
}


def _fill(url: str, orders: int) -> None:
    from pydicom.uid import generate_uid
    from sqlalchemy import insert

    from noctis.core.facilities import apply_facility
    from noctis.index.db import open_index
    from noctis.index.migrate import upgrade
    from noctis.index.orders import Order
    from noctis.specs.facility import FacilitySpec

    upgrade(url)
    index = open_index(url)
    try:
        spec = FacilitySpec.model_validate(
            {"applicationEntities": [{"aeTitle": CALLING, "allowedCIDRs": ["127.0.0.0/8"]}]}
        )
        with index.sessions.begin() as session:
            facility_id = apply_facility(session, "north", spec).id
            rows = []
            for n in range(orders):
                station = STATIONS[n % len(STATIONS)]
                rows.append(
                    {
                        "facility_id": facility_id,
                        "accession_number": f"B{n:08d}",
                        "patient_id": f"P{n}",
                        "issuer_of_patient_id": "",
                        "patient_name": f"{'SMITH' if n % 10 == 0 else 'JONES'}^PAT{n}",
                        "patient_birth_date": "19700101",
                        "patient_sex": "O",
                        "requested_procedure_id": f"B{n:08d}",
                        "requested_procedure_description": "BENCH PROCEDURE",
                        "procedure_code_value": "",
                        "procedure_code_scheme": "",
                        "procedure_code_meaning": "",
                        "scheduled_procedure_step_id": f"B{n:08d}",
                        "modality": station[:2],
                        "scheduled_station_ae_title": station,
                        "scheduled_date": f"202701{1 + (n // len(STATIONS)) % DAYS:02d}",
                        "scheduled_time": f"{8 + n % 10:02d}0000",
                        "priority": 0,
                        "referring_physician_name": "",
                        "study_instance_uid": generate_uid(),
                        "status": "scheduled",
                        "created_by": "bench",
                    }
                )
            for start in range(0, orders, 5_000):
                session.execute(insert(Order), rows[start : start + 5_000])
    finally:
        index.close()


def _findscu(port: int, query: dict[str, str], out: Path) -> int:
    keys = ["AccessionNumber", "PatientID", "StudyInstanceUID", "(0040,0100)[0].Modality"]
    if "station" in query:
        keys += [
            f"(0040,0100)[0].ScheduledStationAETitle={query['station']}",
            f"(0040,0100)[0].ScheduledProcedureStepStartDate={query['date']}",
        ]
    if "name" in query:
        keys.append(f"PatientName={query['name']}")
    args = [FINDSCU, "-W", "-X", "-od", str(out), "-aet", CALLING, "-aec", CALLED]
    for key in keys:
        args += ["-k", key]
    for stale in out.glob("rsp*.dcm"):
        stale.unlink()
    subprocess.run(
        [*args, "127.0.0.1", str(port)],
        check=True,
        capture_output=True,
        env={**os.environ, "TCP_NODELAY": "1"},
        timeout=120,
    )
    return len(list(out.glob("rsp*.dcm")))


def _pynetdicom(port: int, query: dict[str, str]) -> int:
    from pydicom.dataset import Dataset
    from pynetdicom import AE, evt

    from noctis.core.modality_worklist import MODALITY_WORKLIST_FIND

    identifier = Dataset()
    identifier.AccessionNumber = ""
    identifier.PatientID = ""
    identifier.StudyInstanceUID = ""
    identifier.PatientName = query.get("name", "")
    step = Dataset()
    step.Modality = ""
    step.ScheduledStationAETitle = query.get("station", "")
    step.ScheduledProcedureStepStartDate = query.get("date", "")
    identifier.ScheduledProcedureStepSequence = [step]
    ae = AE(ae_title=CALLING)
    ae.add_requested_context(MODALITY_WORKLIST_FIND)
    # Nagle off, as findscu's TCP_NODELAY=1: otherwise the request's data set PDU waits
    # ~40 ms for the SCP's delayed ACK of its command PDU.
    assoc = ae.associate(
        "127.0.0.1", port, ae_title=CALLED, evt_handlers=[(evt.EVT_CONN_OPEN, _no_delay)]
    )
    if not assoc.is_established:
        raise BenchError("the SCP refused the association")
    try:
        answers = sum(
            1
            for status, found in assoc.send_c_find(identifier, MODALITY_WORKLIST_FIND)
            if found is not None and status.Status in (0xFF00, 0xFF01)
        )
    finally:
        assoc.release()
    return answers


def _no_delay(event: Any) -> None:
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _median_ms(run: Any) -> tuple[float, int]:
    times, answers = [], 0
    for _ in range(RUNS):
        started = time.perf_counter()
        answers = run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), answers


def measure(url: str, data_dir: Path, orders: int) -> dict[str, Any]:
    from noctis.core.runtime import Runtime
    from noctis.scp.server import Scp
    from noctis.settings import Settings

    _fill(url, orders)
    settings = Settings(mode="embedded", data_dir=data_dir, database_url=url, ae_title=CALLED)
    runtime = Runtime.open(settings)
    scp = Scp(runtime, host="127.0.0.1", port=0).start()
    out = data_dir / "findscu"
    out.mkdir(exist_ok=True)
    row: dict[str, Any] = {"orders": orders}
    try:
        for name, query in QUERIES.items():
            ms, answers = _median_ms(lambda q=query: _findscu(scp.port, q, out))  # type: ignore[misc]
            row[f"{name}_findscu_ms"], row[f"{name}_answers"] = ms, answers
            ms, answers = _median_ms(lambda q=query: _pynetdicom(scp.port, q))  # type: ignore[misc]
            if answers != row[f"{name}_answers"]:
                raise BenchError(
                    f"{name}: findscu got {row[f'{name}_answers']}, pynetdicom {answers}"
                )
            row[f"{name}_pynetdicom_ms"] = ms
    finally:
        scp.stop(timeout=5)
        runtime.close()
    return row


def main(console: Console, results_dir: Path, *, quick: bool) -> int:
    import logging

    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    if not Path(FINDSCU).is_file():
        console.print(f"[red]dcmtk's findscu is not at {FINDSCU} (apt-get install dcmtk)[/red]")
        return 1
    sizes = QUICK_SIZES if quick else SIZES
    load_before = list(load_average())
    results: dict[str, list[dict[str, Any]]] = {"sqlite": [], "postgresql": []}
    try:
        with tempfile.TemporaryDirectory(prefix="noctis-bench-mwl-") as tmp:
            root = Path(tmp)
            for orders in sizes:
                console.print(f"SQLite: {orders:,} orders")
                where = root / f"sqlite-{orders}"
                where.mkdir()
                results["sqlite"].append(
                    measure(f"sqlite:///{where / 'index.sqlite3'}", where, orders)
                )
            server = start_postgres(durable=True)
            try:
                for orders in sizes:
                    console.print(f"PostgreSQL: {orders:,} orders")
                    where = root / f"pg-{orders}"
                    where.mkdir()
                    url = server.create_database(f"bench_mwl_{orders}")
                    results["postgresql"].append(measure(url, where, orders))
            finally:
                server.stop()
    except (BenchError, subprocess.CalledProcessError) as exc:
        console.print(f"[red]{exc}[/red]")
        return 1
    table = Table(title=f"Modality Worklist C-FIND, whole exchange (ms; medians of {RUNS})")
    for column in ("index", "orders", "query", "answers", "findscu -W", "pynetdicom"):
        table.add_column(column, justify="left" if column in ("index", "query") else "right")
    for backend, rows in results.items():
        for row in rows:
            for name in QUERIES:
                table.add_row(
                    backend,
                    f"{row['orders']:,}",
                    name,
                    str(row[f"{name}_answers"]),
                    f"{row[f'{name}_findscu_ms']:.1f}",
                    f"{row[f'{name}_pynetdicom_ms']:.1f}",
                )
    console.print(table)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-mwl.json"
    document = {
        "suite": "mwl",
        "load_before": load_before,
        "load_after": list(load_average()),
        "results": results,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"results: {path}")
    return 0
