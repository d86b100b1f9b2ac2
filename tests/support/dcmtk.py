"""Debian's dcmtk tools as DICOM peers in tests: echoscu, storescu, findscu, movescu, getscu
and a storescp destination.

Every tool runs from /usr/bin (pynetdicom installs console scripts with the same names that
come first in a virtualenv's PATH and are not dcmtk), with ``TCP_NODELAY=1`` in its environment
(dcmtk 3.6.7 leaves Nagle's algorithm on otherwise and each exchange stalls ~40 ms), and with a
timeout, so a hung peer fails the test instead of the suite.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from support import README_HINT, terminate, wait_started
from support.ports import LOOPBACK, free_port, is_listening

DCMTK_BIN = Path(os.environ.get("NOCTIS_TEST_DCMTK_BIN", "/usr/bin"))
TIMEOUT = 120.0

# storescu's option that proposes exactly this transfer syntax (plus the uncompressed ones)
STORESCU_SYNTAX_FLAG = {
    ImplicitVRLittleEndian: "-xi",
    ExplicitVRLittleEndian: "-xe",
    ExplicitVRBigEndian: "-xb",
    DeflatedExplicitVRLittleEndian: "-xd",
    JPEGBaseline8Bit: "-xy",
    JPEGExtended12Bit: "-xx",
    JPEGLosslessSV1: "-xs",
    JPEGLSLossless: "-xt",
    JPEGLSNearLossless: "-xu",
    JPEG2000Lossless: "-xv",
    JPEG2000: "-xw",
    RLELossless: "-xr",
}


class DcmtkMissing(RuntimeError):
    pass


@dataclass
class ToolResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def tool(name: str) -> str:
    path = DCMTK_BIN / name
    if not path.is_file():
        raise DcmtkMissing(f"dcmtk's {name} is not at {path}. {README_HINT}")
    return str(path)


def environment() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


def run_tool(
    name: str, args: Sequence[str], *, timeout: float = TIMEOUT, cwd: Path | None = None
) -> ToolResult:
    command = [tool(name), *args]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment(),
        cwd=cwd,
        check=False,
    )
    return ToolResult(command, completed.returncode, completed.stdout, completed.stderr)


def _peer(port: int, calling: str, called: str, host: str) -> list[str]:
    return ["-aet", calling, "-aec", called, host, str(port)]


def echoscu(port: int, *, calling: str, called: str, host: str = LOOPBACK) -> ToolResult:
    return run_tool("echoscu", ["-v", *_peer(port, calling, called, host)])


def storescu(
    port: int,
    files: Iterable[Path],
    *,
    calling: str,
    called: str,
    syntax: str | None = None,
    host: str = LOOPBACK,
    timeout: float = TIMEOUT,
) -> ToolResult:
    """Send files in one association; ``syntax`` proposes that transfer syntax for them."""
    flags = [STORESCU_SYNTAX_FLAG[syntax]] if syntax else []
    args = [*flags, "-v", *_peer(port, calling, called, host), *(str(f) for f in files)]
    return run_tool("storescu", args, timeout=timeout)


def _keys(level: str, keys: Mapping[str, str] | Sequence[str]) -> list[str]:
    args = ["-k", f"QueryRetrieveLevel={level}"]
    items = keys.items() if isinstance(keys, Mapping) else ((k, None) for k in keys)
    for key, value in items:
        args += ["-k", key if value is None else f"{key}={value}"]
    return args


def _model(model: str) -> str:
    return {"study": "-S", "patient": "-P"}[model]


@dataclass
class FindResult(ToolResult):
    responses: list[Dataset]


def findscu(
    port: int,
    keys: Mapping[str, str] | Sequence[str],
    *,
    level: str,
    model: str = "study",
    calling: str,
    called: str,
    workdir: Path,
    host: str = LOOPBACK,
) -> FindResult:
    """C-FIND; ``keys`` maps keyword to value ("" or a bare keyword: return key only)."""
    out = workdir / f"find-{time.monotonic_ns()}"
    out.mkdir(parents=True)
    args = ["-v", _model(model), "-X", "-od", str(out), *_keys(level, keys)]
    result = run_tool("findscu", [*args, *_peer(port, calling, called, host)])
    responses = [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    shutil.rmtree(out, ignore_errors=True)
    return FindResult(result.args, result.returncode, result.stdout, result.stderr, responses)


def final_status(output: str) -> int | None:
    """The last DIMSE status dcmtk printed (``Status: 0x0000`` / ``DIMSE Status : 0xa702``)."""
    found = re.findall(r"Status\s*:?\s*0x([0-9a-fA-F]{4})", output)
    return int(found[-1], 16) if found else None


def movescu(
    port: int,
    keys: Mapping[str, str],
    *,
    destination: str,
    level: str,
    model: str = "study",
    calling: str,
    called: str,
    host: str = LOOPBACK,
) -> ToolResult:
    args = ["-d", _model(model), "-aem", destination, *_keys(level, keys)]
    return run_tool("movescu", [*args, *_peer(port, calling, called, host)])


def getscu(
    port: int,
    keys: Mapping[str, str],
    *,
    level: str,
    model: str = "study",
    calling: str,
    called: str,
    output_dir: Path,
    host: str = LOOPBACK,
) -> ToolResult:
    """C-GET into ``output_dir``, bit-preserving (the data sets are written as received)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    args = ["-d", _model(model), "+B", "-od", str(output_dir), *_keys(level, keys)]
    return run_tool("getscu", [*args, *_peer(port, calling, called, host)])


def suboperation_counts(output: str) -> dict[str, int]:
    """The sub-operation counts of the last C-MOVE/C-GET response in dcmtk's debug output
    (``Completed Suboperations       : 5``, ``none`` when the field is absent)."""
    counts: dict[str, int] = {}
    for kind in ("Remaining", "Completed", "Failed", "Warning"):
        found = re.findall(rf"{kind} Suboperations\s*:\s*(\d+|none)", output)
        if found:
            counts[kind.lower()] = 0 if found[-1] == "none" else int(found[-1])
    return counts


class StoreSCP:
    """dcmtk's storescp as a C-MOVE destination: accepts every syntax (+xa), writes each data
    set exactly as received (+B) into ``directory``."""

    def __init__(self, directory: Path, ae_title: str = "DEST") -> None:
        self.directory = directory
        self.ae_title = ae_title
        self.port = free_port()
        self.log = directory.parent / f"storescp-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> StoreSCP:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            tool("storescp"),
            "+xa",
            "+B",
            "-aet",
            self.ae_title,
            "-od",
            str(self.directory),
            "-v",
            str(self.port),
        ]
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=environment()
            )
        wait_started(
            lambda: is_listening(self.port),
            what=f"storescp on {LOOPBACK}:{self.port}",
            process=self._process,
            log=self.log,
            timeout=timeout,
        )
        return self

    def files(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file())

    def stop(self) -> None:
        if self._process is not None:
            terminate(self._process, timeout=5)
            self._process = None

    def __enter__(self) -> StoreSCP:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
