"""Index writers of one SQLite file take turns across processes
(``noctis.index.sqlite.SqliteWriteLock``): a writer in another process holding the lock makes
this one wait for it, then go at once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from noctis.index.db import open_index
from noctis.index.postgresql import PostgresqlIndex
from noctis.index.sqlite import SqliteIndex, SqliteWriteLock

HOLD_SECONDS = 0.6

_HOLDER = """
import sys, time
from pathlib import Path
from noctis.index.sqlite import SqliteWriteLock
with SqliteWriteLock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    Path(sys.argv[3]).touch()  # the last thing it does before it lets go
"""


def test_a_writer_waits_for_the_other_process_then_goes_at_once(tmp_path: Path) -> None:
    database = tmp_path / "index.sqlite3"
    letting_go = tmp_path / "letting-go"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(database), str(HOLD_SECONDS), str(letting_go)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        lock = SqliteWriteLock(database)
        with lock:
            assert letting_go.exists(), "took the lock while the other process held it"
        lock.close()
    finally:
        holder.wait(timeout=10)


def test_threads_of_one_process_take_turns(tmp_path: Path) -> None:
    import threading

    lock = SqliteWriteLock(tmp_path / "index.sqlite3")
    inside = 0
    most = 0
    guard = threading.Lock()

    def write() -> None:
        nonlocal inside, most
        for _ in range(50):
            with lock:
                with guard:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.0005)  # holds the lock a moment: room for another to overlap
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lock.close()
    assert most == 1


def test_only_a_sqlite_file_gets_the_cross_process_lock(tmp_path: Path) -> None:
    sqlite_file = open_index(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    in_memory = open_index("sqlite://")
    assert isinstance(sqlite_file, SqliteIndex) and isinstance(in_memory, SqliteIndex)
    assert isinstance(sqlite_file.write_lock, SqliteWriteLock)
    assert not isinstance(in_memory.write_lock, SqliteWriteLock)
    postgresql = open_index("postgresql+psycopg://noctis@127.0.0.1:1/noctis")  # not connected
    # PostgreSQL's row locks serialize writers of one study: it has no write lock.
    assert isinstance(postgresql, PostgresqlIndex)
    assert not hasattr(postgresql, "write_lock")
    for index in (sqlite_file, in_memory, postgresql):
        index.close()
