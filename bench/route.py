"""Routing benchmark: Noctis and Orthanc forwarding the same CT series to dcmtk's storescp.

`python bench/run.py route [--quick] [--rounds N] [--targets noctis-embedded,orthanc-sqlite]`

Two cases per target, each on a copy of the series with UIDs of its own:

- on-arrival: the destination is up and every instance is forwarded as it is stored (Noctis:
  a Route with `trigger: instance`; Orthanc: a Lua `OnStoredInstance` calling
  `SendToModality`). storescu sends the series over one association. Figures: the delay from
  storescu's end (the last instance received) to the last instance at the destination, and the
  destination's arrival rate from its first to its last instance.
- backlog: the destination is down while the series is stored, then started; the archive
  sends the whole series (Noctis: its transfers wait, backing off, and the next probe after
  the start sends them; Orthanc: one REST `POST /modalities/dest/store` of the study, which is
  how Orthanc forwards a stored study). Figure: the destination's arrival rate from its first
  to its last instance, i.e. forwarding throughput without the wait.

Both archives keep their defaults otherwise (Noctis: a scan every `route_scan_seconds` = 1 s
for per-instance routes, a batch of 50 per association). The destination is the same storescp
(`+xa`, TCP_NODELAY=1) for both, and must end up holding every instance.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console
from rich.table import Table

from bench import data
from bench.data import FileSet
from bench.noctis import FACILITY, NoctisTarget
from bench.procs import (
    LOOPBACK,
    BenchError,
    Service,
    dcmtk_environment,
    dcmtk_tool,
    free_ports,
    is_listening,
)
from bench.servers import Orthanc
from bench.store import send
from bench.target import CALLING_AE, Target

DESTINATION = "DEST"
TARGETS = ("noctis-embedded", "orthanc-sqlite")
ARRIVAL_TIMEOUT = 300.0


@dataclass
class RouteResult:
    target: str
    case: str
    instances: int
    received_s: float  # storescu's time to store the series in the archive
    delay_s: float  # last instance received by the archive -> last instance at the destination
    forward_per_s: float  # the destination's arrival rate, first to last instance
    ok: bool
    error: str = ""
    round: int = 1


class Destination:
    """dcmtk's storescp as the routing destination; counts the files it wrote."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (self.port,) = free_ports(1)
        self.service: Service | None = None
        self.output = root / "received"
        self.output.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        out = self.output
        argv = [dcmtk_tool("storescp"), "-aet", DESTINATION, "+xa", "-od", str(out), str(self.port)]
        self.service = Service(
            "storescp", argv, log_path=self.root / "storescp.log", env=dcmtk_environment()
        )
        self.service.start()
        self.service.wait_ready(lambda: is_listening(self.port), timeout=20)

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None

    def count(self) -> int:
        return sum(1 for p in self.output.iterdir() if p.is_file())

    def watch(self, expected: int) -> Arrivals:
        """Start timing arrivals (a thread polling the output every 5 ms)."""
        return Arrivals(self, expected)


class Arrivals:
    """When the destination's first file appeared and when it held ``expected`` of them."""

    def __init__(self, destination: Destination, expected: int) -> None:
        self.destination = destination
        self.expected = expected
        self.first: float | None = None
        self.last: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                count = self.destination.count()
            except OSError:  # the output directory of a storescp not started yet
                count = 0
            now = time.monotonic()
            if count and self.first is None:
                self.first = now
            if count >= self.expected:
                self.last = now
                return
            self._stop.wait(0.005)

    def wait(self) -> tuple[float, float]:
        self._thread.join(ARRIVAL_TIMEOUT)
        self._stop.set()
        if self.first is None or self.last is None:
            count = self.destination.count()
            raise BenchError(f"the destination holds {count} of {self.expected} after 300 s")
        return self.first, self.last


class RoutingNoctis(NoctisTarget):
    def __init__(self, root: Path, destination: Destination) -> None:
        super().__init__(root, production=False)
        self.destination = destination

    def start(self) -> None:
        super().start()
        facility = {
            "apiVersion": "pacs.noctis.io/v1alpha1",
            "kind": "Facility",
            "metadata": {"name": FACILITY},
            "spec": {
                "applicationEntities": [
                    {"aeTitle": CALLING_AE, "allowedCIDRs": ["127.0.0.0/8"]},
                    {"aeTitle": DESTINATION, "host": LOOPBACK, "port": self.destination.port},
                ]
            },
        }
        route = {
            "apiVersion": "pacs.noctis.io/v1alpha1",
            "kind": "Route",
            "metadata": {"name": "to-dest"},
            "spec": {
                "facility": FACILITY,
                "trigger": "instance",
                "destinations": [DESTINATION],
                "retry": {"attempts": 100, "initialDelaySeconds": 0.5, "maxDelaySeconds": 1},
            },
        }
        for kind, document in (("facility", facility), ("route", route)):
            path = self.root / f"{kind}.yaml"
            path.write_text(yaml.safe_dump(document))
            self._cli(kind, "apply", "-f", str(path))


class RoutingOrthanc(Orthanc):
    def __init__(self, root: Path, destination: Destination, *, on_arrival: bool) -> None:
        super().__init__(root, postgres=False, dicomweb=False)
        self.destination = destination
        self.on_arrival = on_arrival

    def _config(self) -> dict[str, Any]:
        config = super()._config()
        config["DicomModalities"]["dest"] = [DESTINATION, LOOPBACK, self.destination.port]
        if self.on_arrival:
            script = self.root / "forward.lua"
            script.write_text(
                "function OnStoredInstance(instanceId, tags, metadata, origin)\n"
                "  SendToModality(instanceId, 'dest')\n"
                "end\n"
            )
            config["LuaScripts"] = [str(script)]
        return config

    def store_study(self) -> None:
        """Forward every stored study to the destination (one synchronous job)."""
        studies = self._get("/studies").json()
        response = httpx.post(
            f"http://{LOOPBACK}:{self.http_port}/modalities/dest/store",
            json={"Resources": studies, "Synchronous": True},
            timeout=ARRIVAL_TIMEOUT,
        )
        if response.status_code != 200:
            raise BenchError(f"Orthanc /modalities/dest/store: {response.status_code}")


def _case(
    name: str, make: Any, root: Path, files: FileSet, *, backlog: bool, round_no: int
) -> RouteResult:
    destination = Destination(root)
    target: Target = make(root, destination)
    try:
        if not backlog:
            destination.start()
        target.start()
        arrivals = destination.watch(files.count)
        began = time.monotonic()
        error = send(target, files.files, associations=1)
        received = time.monotonic()
        if error:
            raise BenchError(error)
        if backlog:
            time.sleep(1.0)  # stored, and routing has met the closed port
            destination.start()
            if isinstance(target, RoutingOrthanc):
                target.store_study()
        first, last = arrivals.wait()
        return RouteResult(
            target=target.name,
            case=name,
            instances=files.count,
            received_s=received - began,
            # storescu exits after its last answer: the copy may be there first (0)
            delay_s=max(0.0, last - received) if not backlog else float("nan"),
            forward_per_s=files.count / max(last - first, 1e-6),
            ok=True,
            round=round_no,
        )
    except (BenchError, OSError, RuntimeError) as exc:
        return RouteResult(target.name, name, files.count, 0, 0, 0, False, str(exc), round_no)
    finally:
        target.stop()
        destination.stop()


def _makers(name: str, *, backlog: bool) -> Any:
    if name == "noctis-embedded":
        return lambda root, dest: RoutingNoctis(root, dest)
    if name == "orthanc-sqlite":
        return lambda root, dest: RoutingOrthanc(root, dest, on_arrival=not backlog)
    raise BenchError(f"route: no routing set-up for target {name!r}; choose from {TARGETS}")


def main(
    console: Console,
    *,
    targets: list[str] | None,
    rounds: int,
    sizes: dict[str, int],
    data_dir: Path,
    results_dir: Path,
) -> int:
    names = targets or list(TARGETS)
    dataset = data.prepare(
        data_dir, slices=sizes["slices"], size=sizes["size"], small_count=sizes["small"], copies=2
    )
    results: list[RouteResult] = []
    root = Path(tempfile.mkdtemp(prefix="noctis-bench-route-"))
    try:
        for round_no in range(1, rounds + 1):
            for name in names:
                for case, files, backlog in (
                    ("on-arrival", dataset.ct_copies[0], False),
                    ("backlog", dataset.ct_copies[1], True),
                ):
                    where = root / f"{name}-{case}-{round_no}"
                    with console.status(f"{name}: {case}"):
                        result = _case(
                            case,
                            _makers(name, backlog=backlog),
                            where,
                            files,
                            backlog=backlog,
                            round_no=round_no,
                        )
                    results.append(result)
                    console.log(_line(result))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _table(console, results)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"route-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps([asdict(r) for r in results], indent=2))
    console.print(f"results: {path}")
    return 0 if all(r.ok for r in results) else 1


def _line(result: RouteResult) -> str:
    if not result.ok:
        return f"[red]{result.target} {result.case} failed: {result.error}[/red]"
    delay = (
        "" if result.case == "backlog" else f", delay after the last store {result.delay_s:.2f} s"
    )
    return (
        f"{result.target} {result.case}: stored in {result.received_s:.2f} s, forwarded "
        f"{result.forward_per_s:,.0f} inst/s{delay}"
    )


def _table(console: Console, results: list[RouteResult]) -> None:
    table = Table(title="Routing to dcmtk storescp (medians over rounds)")
    for column in ("target", "case", "instances", "forwarded inst/s", "delay after last store"):
        table.add_column(column)
    groups: dict[tuple[str, str], list[RouteResult]] = {}
    for result in results:
        if result.ok:
            groups.setdefault((result.target, result.case), []).append(result)
    for (target, case), group in groups.items():
        delay = statistics.median(r.delay_s for r in group)
        table.add_row(
            target,
            case,
            str(group[0].instances),
            f"{statistics.median(r.forward_per_s for r in group):,.0f}",
            "" if case == "backlog" else f"{delay:.2f} s",
        )
    console.print(table)
