"""What every SCP process does at its start and end: clean the spool, stop on a signal."""

from __future__ import annotations

import signal
import threading
from pathlib import Path


def clean_spool(directory: Path) -> None:
    """Remove what a previous run left in the spool (a crash mid-transfer). Only before any
    SCP process of this spool directory runs: the files of a live transfer look the same."""
    if not directory.is_dir():
        return
    for leftover in [*directory.glob("incoming-*"), *directory.glob("retrieve-*")]:
        leftover.unlink(missing_ok=True)


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or Ctrl-C (instead of the default: exit at once)."""
    stopping = threading.Event()

    def _handler(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    return stopping
