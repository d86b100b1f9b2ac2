"""Load run (issue 11): legitimate clients beside stores and a login flood, in three phases.

On one running target holding the CT series and the small studies:

- baseline: 200 concurrent QIDO and series-metadata requests (legitimate clients, an API token);
- quiet: the same requests while 8 storescu associations send a fresh copy of the CT series;
- flood: the same again (another fresh copy) with 40 clients POSTing /login beside them
  (random user names and passwords, without pause; `bench/flood.py`, a process of its own).

Every legitimate answer is checked (status 200, the number of studies or instances), every
storescu must succeed and the target must then hold every instance sent, by its own count (as
the store suite checks). A legitimate client that saw any error fails the run. The figures are
measured, not assumed: the flood's answers are counted by status code, whatever they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import cycle
from typing import Any

import aiohttp
import psutil
from yarl import URL

from bench import store
from bench.cpu import CpuMeter
from bench.data import Dataset, FileSet
from bench.flood import LoginFlood, run_async
from bench.procs import RssSampler
from bench.target import Target, wait_for_count
from bench.timing import percentile
from bench.web import IDENTITY, QIDO_PATH

PHASES = ("baseline", "quiet", "flood")
CONCURRENCY = 200  # legitimate requests in flight, half QIDO and half metadata at any time
ASSOCIATIONS = 8
FLOOD_CLIENTS = 40
RAMP_SECONDS = 1.0  # the requests (and the flood) run alone this long before the stores start
REQUEST_TIMEOUT = 60.0  # a legitimate answer slower than this is an error
DICOM_JSON = {"Accept": "application/dicom+json"}
# What one answer holds once per result, counted in the raw body (no JSON parsing: it keeps
# the client's CPU low). StudyInstanceUID per study; SOPInstanceUID per instance.
STUDY_KEY = b'"0020000D"'
INSTANCE_KEY = b'"00080018"'


@dataclass
class Plan:
    """How long and how much: `seconds` is the baseline's length and each store phase's least
    length; the stores of a phase must end within `store_timeout`."""

    seconds: float
    store_timeout: float
    copies_per_phase: int


FULL = Plan(seconds=20.0, store_timeout=60.0, copies_per_phase=1)
QUICK = Plan(seconds=5.0, store_timeout=20.0, copies_per_phase=1)


@dataclass
class Latency:
    """One kind of legitimate request over a phase: every answer's time to the last byte."""

    requests: int = 0
    per_s: float = math.nan
    p50_ms: float = math.nan
    p95_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    samples_ms: list[float] = field(default_factory=list)

    def summarise(self, seconds: float) -> None:
        self.requests = len(self.samples_ms)
        if not self.samples_ms:
            return
        self.per_s = self.requests / seconds
        self.p50_ms = percentile(self.samples_ms, 0.50)
        self.p95_ms = percentile(self.samples_ms, 0.95)
        self.p99_ms = percentile(self.samples_ms, 0.99)
        self.max_ms = max(self.samples_ms)


@dataclass
class LoadPhase:
    target: str
    phase: str
    seconds: float = 0.0  # from the first legitimate request to the last answer
    qido: Latency = field(default_factory=Latency)
    metadata: Latency = field(default_factory=Latency)
    http_errors: dict[str, int] = field(default_factory=dict)  # what legitimate clients saw
    instances: int = 0  # sent by storescu in this phase
    store_seconds: float = math.nan  # first storescu started to last one exited
    instances_per_s: float = math.nan  # those the target holds after the phase, per second
    store_errors: list[str] = field(default_factory=list)
    missing: int = 0  # instances the target does not hold after the phase
    flood: dict[str, Any] = field(default_factory=dict)  # bench/flood.py's report
    peak_rss_mb: float = math.nan
    peak_pss_mb: float = math.nan
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds by component
    machine_busy: float = math.nan
    error: str = ""  # the phase could not run
    round: int = 1

    @property
    def legitimate_errors(self) -> int:
        return sum(self.http_errors.values()) + len(self.store_errors) + self.missing

    @property
    def ok(self) -> bool:
        return not self.error and self.legitimate_errors == 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "legitimate_errors": self.legitimate_errors, "ok": self.ok}


def copies_needed(plan: Plan) -> int:
    """CT copies the data cache must hold: fresh ones for each store phase."""
    return 2 * plan.copies_per_phase


def run_phases(
    target: Target, dataset: Dataset, plan: Plan, done: Callable[[LoadPhase], None]
) -> None:
    """The three phases against a target that already holds `dataset.ct` and `dataset.small`;
    `done` is given each phase as it ends (so an interrupted run keeps the phases before)."""
    run_async(_run_phases(target, dataset, plan, done))


async def _run_phases(
    target: Target, dataset: Dataset, plan: Plan, done: Callable[[LoadPhase], None]
) -> None:
    ct = dataset.ct
    series = f"/studies/{ct.study_uid}/series/{ct.series_uid}"
    clients = LegitimateClients(
        target.dicomweb_root(),
        {**IDENTITY, **target.http_headers()},
        expected_studies=dataset.small.wildcard_studies + ct.wildcard_studies,
        metadata_path=f"{series}/metadata",
        expected_instances=ct.count,
    )
    copies = dataset.ct_copies
    per = plan.copies_per_phase
    sends = {"baseline": [], "quiet": copies[:per], "flood": copies[per : 2 * per]}
    async with clients:
        await clients.warm_up()  # caches and lazy imports, as the web suite's first request
        for name in PHASES:
            done(await _phase(target, clients, name, sends[name], plan))


async def _phase(
    target: Target, clients: LegitimateClients, name: str, sends: list[FileSet], plan: Plan
) -> LoadPhase:
    phase = LoadPhase(target=target.name, phase=name)
    files = [path for fileset in sends for path in fileset.files]
    expected = target.count_instances() + len(files)
    flood = None
    if name == "flood":
        login = target.dicomweb_root().removesuffix("/dicom-web") + "/login"
        flood = LoginFlood(login, clients=FLOOD_CLIENTS, max_seconds=plan.store_timeout + 60)
    trees = {"server": lambda: serving_pids(target)}
    trees.update({part: _backing(target, part) for part in target.backing_pids()})
    stop = asyncio.Event()
    gc.collect()
    gc.disable()  # no collection pauses in the client's own figures; collected after
    try:
        with RssSampler(lambda: serving_pids(target)) as rss, CpuMeter(trees) as cpu:
            if flood is not None:
                flood.start()
            began = time.perf_counter()
            requests = asyncio.create_task(clients.run(stop))
            try:
                await asyncio.sleep(RAMP_SECONDS)
                least = asyncio.sleep(plan.seconds - RAMP_SECONDS)
                if files:
                    await asyncio.gather(_send(phase, target, files, plan), least)
                else:
                    await least
            except asyncio.CancelledError:  # Ctrl-C: no request or storescu left behind
                requests.cancel()
                _kill_storescu()
                raise
            finally:
                stop.set()
                if flood is not None:  # in a thread: the loop keeps timing requests in flight
                    phase.flood = await asyncio.to_thread(flood.stop)
                await requests
                phase.seconds = time.perf_counter() - began
    finally:
        gc.enable()
        gc.collect()
    if files:
        counted = await asyncio.to_thread(wait_for_count, target, expected)
        phase.missing = max(0, expected - counted)
        phase.instances_per_s = (phase.instances - phase.missing) / phase.store_seconds
    clients.take(phase)
    phase.peak_rss_mb = rss.peak_rss / 2**20
    phase.peak_pss_mb = rss.peak_pss / 2**20
    phase.cpu_s = dict(cpu.seconds)
    phase.cpu_s["client"] = phase.cpu_s.pop("harness", math.nan)
    flood_cpu = float(phase.flood.get("cpu_seconds", 0.0))
    if flood is not None:
        phase.cpu_s["flood"] = flood_cpu
    # storescu and the flood process are the benchmark's only children that end in a phase
    phase.cpu_s["storescu"] = max(0.0, phase.cpu_s.pop("sender", 0.0) - flood_cpu)
    phase.machine_busy = cpu.busy
    return phase


async def _send(phase: LoadPhase, target: Target, files: list[Any], plan: Plan) -> None:
    began = time.perf_counter()
    phase.store_errors = await asyncio.to_thread(
        store.send_each, target, files, associations=ASSOCIATIONS, timeout=plan.store_timeout
    )
    phase.store_seconds = time.perf_counter() - began
    phase.instances = len(files)


def _kill_storescu() -> None:
    """Kill the benchmark's own storescu children (send_each's thread then returns)."""
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if child.name() == "storescu":
                child.kill()


def serving_pids(target: Target) -> list[int]:
    """The processes that answer DICOM and the web: `serve`, or `scp` and `api`."""
    return [*target.server_pids(), *target.web_pids()]


def _backing(target: Target, part: str) -> Any:
    return lambda: target.backing_pids().get(part, [])


class LegitimateClients:
    """`CONCURRENCY` logged-in clients on keep-alive connections, each sending QIDO and
    metadata requests in turn (half start with each), one after another, until stopped."""

    def __init__(
        self,
        root: str,
        headers: dict[str, str],
        *,
        expected_studies: int,
        metadata_path: str,
        expected_instances: int,
    ) -> None:
        self.root = root
        self.headers = headers
        # The wildcard stays a literal "*" as a browser sends it (see bench/web.py).
        self.requests = {
            "qido": (URL(root + QIDO_PATH, encoded=True), STUDY_KEY, expected_studies),
            "metadata": (URL(root + metadata_path, encoded=True), INSTANCE_KEY, expected_instances),
        }
        self._session: aiohttp.ClientSession | None = None
        self._reset()

    def _reset(self) -> None:
        self.samples: dict[str, list[float]] = {kind: [] for kind in self.requests}
        self.errors: Counter[str] = Counter()

    async def __aenter__(self) -> LegitimateClients:
        self._session = aiohttp.ClientSession(
            headers={**self.headers, **DICOM_JSON},
            connector=aiohttp.TCPConnector(limit=CONCURRENCY),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            auto_decompress=False,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def warm_up(self) -> None:
        for kind in self.requests:
            await self._one(kind)
        if self.errors:
            raise RuntimeError(f"the first legitimate requests failed: {dict(self.errors)}")
        self._reset()

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`; a request in flight then is finished and counted."""
        self._began = time.perf_counter()

        async def client(first: int) -> None:
            kinds = cycle(list(self.requests)[first:] + list(self.requests)[:first])
            while not stop.is_set():
                await self._one(next(kinds))

        await asyncio.gather(*(client(i % 2) for i in range(CONCURRENCY)))
        self._ended = time.perf_counter()

    async def _one(self, kind: str) -> None:
        url, key, expected = self.requests[kind]
        assert self._session is not None
        began = time.perf_counter()
        try:
            async with self._session.get(url) as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.errors[f"{kind}: {type(exc).__name__}"] += 1
            return
        elapsed = (time.perf_counter() - began) * 1000
        if response.status != 200:
            self.errors[f"{kind}: HTTP {response.status}"] += 1
        elif (found := body.count(key)) != expected:
            self.errors[f"{kind}: {found} results, expected {expected}"] += 1
        else:
            self.samples[kind].append(elapsed)

    def take(self, phase: LoadPhase) -> None:
        """Move this phase's figures into `phase`, and start afresh."""
        seconds = self._ended - self._began
        for kind, latency in (("qido", phase.qido), ("metadata", phase.metadata)):
            latency.samples_ms = self.samples[kind]
            latency.summarise(seconds)
        phase.http_errors = dict(self.errors)
        self._reset()
