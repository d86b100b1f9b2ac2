"""Acknowledged = durable: the system calls of one real C-STORE, traced with strace, show the
object's data and its name (and the names of the directories made for it) synced to disk
before the index commit, and that commit synced before the C-STORE response goes out. Also:
PostgreSQL commits are never asynchronous, and a spool left by a crash is cleaned when the
archive starts.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from scp_support import scp_environment
from sqlalchemy import text

from support import README_HINT, dcmtk, log_tail, terminate, wait_started
from support.archive import embedded_settings, open_runtime
from support.dicomdata import generate_ct_series
from support.logs import ServerLogs
from support.ports import LOOPBACK, free_ports
from support.serve import EmbeddedServe

pytestmark = pytest.mark.dcmtk

_LINE = re.compile(r"^(?P<pid>\d+)\s+\S+\s+(?P<rest>.*)$")
_ENTERED = re.compile(r"^(?P<name>\w+)\((?P<args>.*)$")
_RESUMED = re.compile(r"^<\.\.\. (?P<name>\w+) resumed>")
_RESULT = re.compile(r"\) += (?P<result>-?\d+)[^)]*$")
_UNFINISHED = " <unfinished ...>"
_PATH = re.compile(r"<(?P<path>/[^<>]*)>")


@dataclass
class Call:
    name: str
    args: str
    pid: int
    started: int  # line number where the call was entered
    finished: int | None = None  # line number where it returned (None: not in the trace)
    result: int | None = None

    def path(self) -> str:
        found = _PATH.search(self.args)
        return found.group("path") if found else ""

    def strings(self) -> list[str]:
        return re.findall(r'"([^"]*)"', self.args)


def parse_trace(lines: list[str]) -> list[Call]:
    """strace -f output: one Call per system call, with where it started and returned (a call
    interrupted by another thread's shows as "<unfinished ...>" then "<... resumed>")."""
    calls: list[Call] = []
    pending: dict[tuple[int, str], Call] = {}
    for number, line in enumerate(lines):
        matched = _LINE.match(line)
        if not matched:
            continue
        pid, rest = int(matched.group("pid")), matched.group("rest")
        resumed = _RESUMED.match(rest)
        if resumed:
            call = pending.pop((pid, resumed.group("name")), None)
        else:
            entered = _ENTERED.match(rest)
            if not entered:
                continue
            call = Call(entered.group("name"), entered.group("args"), pid, number)
            calls.append(call)
            if rest.endswith(_UNFINISHED):
                pending[(pid, call.name)] = call
                continue
        returned = _RESULT.search(rest)
        if call is not None and returned:
            call.finished, call.result = number, int(returned.group("result"))
    return calls


def _ready(health_port: int) -> bool:
    try:
        url = f"http://{LOOPBACK}:{health_port}/readyz"
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_one_c_store_syncs_object_name_and_index_before_its_response(
    tmp_path: Path, server_logs: ServerLogs
) -> None:
    strace = shutil.which("strace")
    assert strace, f"strace is missing: {README_HINT}"
    port, health_port = free_ports(2)
    data_dir = tmp_path / "data"
    env = scp_environment(data_dir, port, health_port)
    trace = tmp_path / "scp.strace"
    log = tmp_path / "scp.log"
    server_logs.watch("noctis scp under strace", log)
    with log.open("ab") as out:
        tracer = subprocess.Popen(
            [
                strace,
                "-f",
                "-qq",
                "--seccomp-bpf",
                "-tt",
                "-yy",
                "-s",
                "256",
                "-e",
                "trace=fsync,fdatasync,link,linkat,mkdir,mkdirat,sendto",
                "-o",
                str(trace),
                sys.executable,
                "-m",
                "noctis.cli",
                "scp",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_started(
            lambda: _ready(health_port), what="noctis scp", process=tracer, log=log, timeout=90
        )
        [ct] = generate_ct_series(tmp_path / "ct", slices=1, size=256)
        result = dcmtk.storescu(port, [ct], calling="MODALITY", called="NOCTIS")
        assert result.ok, result.output
    finally:
        for child in psutil.Process(tracer.pid).children():
            child.terminate()
        terminate(tracer, timeout=30)

    calls = parse_trace(trace.read_text().splitlines())
    objects = str(data_dir / "objects")
    [linked] = [
        c for c in calls if c.name in ("link", "linkat") and objects in c.args and c.result == 0
    ]
    spooled, stored = linked.strings()[0], linked.strings()[-1]
    assert stored.startswith(objects), linked
    assert linked.finished is not None

    # The response: the first send on the association's socket after the object was linked.
    response = next(
        c
        for c in calls
        if c.name == "sendto" and c.started > linked.started and f":{port}->" in c.args
    )

    def synced_before_response(path: str) -> list[Call]:
        return [
            c
            for c in calls
            if c.name in ("fsync", "fdatasync")
            and c.path() == path
            and c.finished is not None
            and c.finished < response.started
        ]

    # The index commit: SQLite's write-ahead log synced, after the object was linked.
    wal = str(data_dir / "index.sqlite3-wal")
    commit = next(
        (
            c
            for c in synced_before_response(wal)
            if c.started > linked.finished and c.name in ("fsync", "fdatasync")
        ),
        None,
    )
    assert commit is not None, (
        f"the index's write-ahead log was not synced before the response:\n{log_tail(log)}"
    )
    # The data and its name in the store, both on disk before that commit.
    assert any(c.finished < commit.started for c in synced_before_response(spooled)), (
        f"the received file {spooled} was not synced before the index commit"
    )
    directory = str(Path(stored).parent)
    assert any(
        linked.finished < c.started and c.finished < commit.started
        for c in synced_before_response(directory)
    ), f"the directory {directory} was not synced between the link and the index commit"
    # Every directory made for the new study and series, by a sync of its parent.
    made = [
        c.strings()[0]
        for c in calls
        if c.name in ("mkdir", "mkdirat") and c.result == 0 and objects + "/" in c.args
    ]
    assert made, "a new study's directories were made"
    for new_directory in made:
        parent = str(Path(new_directory).parent)
        assert synced_before_response(parent), f"{new_directory}'s name was not synced"


@pytest.mark.postgres
def test_postgresql_commits_are_synchronous_even_where_the_server_says_off(
    tmp_path: Path, pg_url: str
) -> None:
    """The test server runs with synchronous_commit=off (for speed); the archive's own
    connections turn it back on, as they would on a production server set up that way."""
    settings = embedded_settings(tmp_path).model_copy(update={"database_url": pg_url})
    runtime = open_runtime(settings)
    try:
        with runtime.engine.connect() as conn:
            assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
        with runtime.reading() as conn:
            assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
    finally:
        runtime.close()


def test_serve_cleans_a_crashed_spool_at_start(tmp_path: Path, server_logs: ServerLogs) -> None:
    """`noctis serve` with one SCP process removes what a crash left in the spool."""
    serve = EmbeddedServe(tmp_path, server_logs)
    spool = serve.data_dir / "spool"
    spool.mkdir(parents=True)
    leftovers = [spool / "incoming-crashed1", spool / "retrieve-crashed2"]
    for leftover in leftovers:
        leftover.write_bytes(b"\0" * 1024)
    with serve:
        assert [p for p in leftovers if p.exists()] == []
