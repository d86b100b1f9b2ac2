"""Server logs a test must leave free of Python tracebacks.

A fixture that starts a server registers its log with the `server_logs` fixture
(tests/conftest.py); at teardown, after the server has stopped, any traceback in a registered
log fails the test with the traceback itself, so no test has to look for one by hand:

    @pytest.fixture
    def scp_process(server_logs: ServerLogs, tmp_path: Path) -> Iterator[ScpProcess]:
        log = tmp_path / "scp.log"
        server_logs.watch("noctis scp", log)
        ...
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

TRACEBACK = "Traceback (most recent call last):"
SHOWN_LINES = 30


def tracebacks(text: str) -> list[str]:
    """Each traceback in ``text``: its first line and what follows, up to SHOWN_LINES lines."""
    lines = text.splitlines()
    return [
        "\n".join(lines[number : number + SHOWN_LINES])
        for number, line in enumerate(lines)
        if TRACEBACK in line
    ]


class ServerLogs:
    """The logs of the servers one test started."""

    def __init__(self) -> None:
        self._watched: list[tuple[str, Callable[[], str]]] = []

    def watch(self, what: str, log: Path | Callable[[], str]) -> None:
        """Check ``log`` (a file, or a function returning the text) when the test ends."""
        read = log if callable(log) else lambda: _read(log)
        self._watched.append((what, read))

    def problems(self) -> list[str]:
        found = []
        for what, read in self._watched:
            found += [f"{what} logged a traceback:\n{excerpt}" for excerpt in tracebacks(read())]
        return found


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
