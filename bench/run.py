"""Run the benchmarks: `python bench/run.py {store,web,all,load,images,...} [--quick]`
(or `python -m bench`).

Every target is started here on free loopback ports in a temp dir, measured, and stopped
before the next one starts (so targets never compete with each other for the CPU); all of
them are stopped on errors and on Ctrl-C too. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

if not __package__:  # `python bench/run.py`: make `bench` importable, not its modules
    _repo = Path(__file__).resolve().parent.parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _repo / "bench"]
    sys.path.insert(0, str(_repo))

from rich.console import Console

from bench import (
    backing,
    cluster,
    data,
    images,
    load,
    mwl,
    query,
    report_render,
    route,
    stable,
    store,
    web,
    worklist,
)
from bench import delete as delete_bench
from bench import notify as notify_bench
from bench import retention as retention_bench
from bench.data import Dataset, FileSet
from bench.noctis import NoctisTarget
from bench.procs import BenchError, load_average
from bench.report import Results, print_report, write_json
from bench.servers import TARGET_NAMES, make_target
from bench.target import Target

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
FULL = {"slices": 300, "size": 512, "small": 2000, "runs": 30}
QUICK = {"slices": 24, "size": 512, "small": 100, "runs": 5}
LOAD_TARGETS = ("noctis-embedded", "noctis-production")  # the load suite logs in to Noctis

# Piped into a file or CI log, rich would wrap the tables at 80 columns: five targets need more.
console = Console() if Console().is_terminal else Console(width=160)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Noctis side by side with dcmtk storescp and Orthanc (SQLite, PostgreSQL).",
    )
    parser.add_argument(
        "suite",
        choices=(
            "store",
            "web",
            "all",
            "load",
            "images",
            "cluster",
            "stable",
            "delete",
            "retention",
            "route",
            "notify",
            "report",
            "worklist",
            "mwl",
        ),
        help="store: C-STORE throughput; web: DICOMweb and C-FIND latency; all: both; "
        "load: QIDO/metadata under concurrent stores and a login flood (Noctis targets); "
        "images: build times and sizes of the container images; "
        "cluster: the one-node cluster (up, helm install to first C-STORE, memory; as root); "
        "stable: the study-stable sweep's cost over 100,000 studies (SQLite, PostgreSQL); "
        "delete: time to delete the CT study (answered, all objects gone; Noctis targets); "
        "retention: a retention run over --studies studies (SQLite, PostgreSQL); "
        "route: forwarding to storescp, Noctis beside Orthanc (bench/route.py); "
        "notify: notification fan-out and webhook calls (SQLite, PostgreSQL); "
        "report: signing a report, PDF + SR rendered and stored (SQLite, PostgreSQL); "
        "worklist: the reading worklist's API and page at 10,000 and 100,000 studies "
        "(PostgreSQL; bench/worklist.py); "
        "mwl: Modality Worklist C-FIND latency, findscu and pynetdicom, 100 and 10,000 "
        "orders (SQLite, PostgreSQL)",
    )
    parser.add_argument("--quick", action="store_true", help="small data, few runs: a smoke run")
    parser.add_argument(
        "--targets",
        help=f"comma-separated subset of: {', '.join(TARGET_NAMES)} (default: all of them; "
        f"load: {', '.join(LOAD_TARGETS)})",
    )
    parser.add_argument("--runs", type=int, help="timed runs per web/C-FIND request")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat everything N times, targets interleaved, fresh servers each time; "
        "the tables show medians over rounds (a noisy machine needs 3 or more)",
    )
    parser.add_argument("--slices", type=int, help="CT slices (300; --quick 24)")
    parser.add_argument(
        "--studies", type=int, help="retention: studies in the index (100,000; --quick 10,000)"
    )
    parser.add_argument("--small", type=int, help="small studies (2000; --quick 100)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=data.DEFAULT_CACHE,
        help="where generated data is cached (default %(default)s)",
    )
    parser.add_argument(
        "--pg-fsync",
        choices=("on", "off"),
        default="on",
        help="PostgreSQL durability: on = PostgreSQL defaults; off = the test suite's settings",
    )
    parser.add_argument(
        "--s3",
        choices=("auto", *backing.S3_SERVERS),
        default="auto",
        help="Noctis's S3 server: auto = MinIO if scripts/build-testbed.sh minio built it, "
        "else SeaweedFS weed mini (the test suite's)",
    )
    parser.add_argument(
        "--gzip",
        action="store_true",
        help="DICOMweb requests accept gzip like a browser (default: uncompressed bodies)",
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="images: rebuild every image without podman's layer cache (the base is kept)",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--keep", action="store_true", help="keep the servers' temp dirs and logs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.suite == "images":
        return images.main(console, args.results_dir, no_cache=args.no_cache)
    if args.suite == "cluster":
        return cluster.main(console, args.results_dir)
    if args.suite == "stable":
        return stable.main(console, args.results_dir, quick=args.quick)
    if args.suite == "worklist":
        return worklist.main(console, args.results_dir, quick=args.quick)
    if args.suite == "mwl":
        return mwl.main(console, args.results_dir, quick=args.quick)
    if args.suite == "retention":
        return _run_retention(args)
    if args.suite == "notify":
        return _run_notify(args)
    if args.suite == "report":
        return _run_report(args)
    sizes = dict(QUICK if args.quick else FULL)
    for key in ("runs", "slices", "small"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    if args.suite == "route":
        return route.main(
            console,
            targets=[n.strip() for n in args.targets.split(",")] if args.targets else None,
            rounds=args.rounds,
            sizes=sizes,
            data_dir=args.data_dir,
            results_dir=args.results_dir,
        )
    plan = load.QUICK if args.quick else load.FULL
    default = LOAD_TARGETS if args.suite in ("load", "delete") else TARGET_NAMES
    names = [n.strip() for n in (args.targets or ",".join(default)).split(",") if n.strip()]
    unknown = sorted(set(names) - set(TARGET_NAMES))
    if unknown:
        console.print(f"[red]unknown targets: {', '.join(unknown)}[/red]")
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    # Also when started in the background by a shell, which would have SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    results = Results(meta=_meta(args, sizes))
    if args.suite == "load":
        results.meta["load"] = {
            **asdict(plan),
            "concurrency": load.CONCURRENCY,
            "associations": load.ASSOCIATIONS,
            "flood_clients": load.FLOOD_CLIENTS,
        }
    began = time.monotonic()
    with console.status("preparing data (generated once, then cached)"):
        dataset = data.prepare(
            args.data_dir,
            slices=sizes["slices"],
            size=sizes["size"],
            small_count=sizes["small"],
            copies=max(2, load.copies_needed(plan)) if args.suite == "load" else 2,
        )
        data.warm_page_cache(dataset)
    results.meta["data"] = data.summary(dataset)
    console.log(f"data ready in {time.monotonic() - began:.1f} s: {dataset.directory}")

    root = Path(tempfile.mkdtemp(prefix="noctis-bench-"))
    if args.suite == "delete":
        return _run_delete(args, names, dataset, results, root)
    interrupted = False
    try:
        for round_no in range(1, args.rounds + 1):
            for name in names:
                run_target(
                    name,
                    root / f"{name}-{round_no}",
                    args,
                    sizes,
                    dataset,
                    results,
                    round_no=round_no,
                    plan=plan,
                )
    except KeyboardInterrupt:
        interrupted = True
        console.print("[yellow]interrupted: every server has been stopped[/yellow]")
    finally:
        results.meta["host"]["load_after"] = list(load_average())
        results.meta["finished"] = datetime.now().isoformat(timespec="seconds")
        results.meta["interrupted"] = interrupted
        print_report(results, console)
        path = write_json(results, args.results_dir)
        console.print(f"results: {path}")
        if args.keep:
            console.print(f"servers' dirs and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    failed = any(d.get("error") for d in results.targets.values())
    failed |= any(not r.ok for r in results.store) or any(not t.ok for t in results.timings)
    failed |= any(not p.ok for p in results.load)
    return 130 if interrupted else int(failed)


def _run_retention(args: argparse.Namespace) -> int:
    studies = args.studies or (10_000 if args.quick else 100_000)
    results = Results(meta=_meta(args, {"studies": studies}))
    outcome = retention_bench.main(console, studies)
    results.meta["retention"] = [r.row() for r in outcome]
    results.meta["finished"] = datetime.now().isoformat(timespec="seconds")
    console.print(f"results: {write_json(results, args.results_dir)}")
    return int(any(r.error for r in outcome))


def _run_notify(args: argparse.Namespace) -> int:
    events = 100 if args.quick else 1000
    results = Results(meta=_meta(args, {"events": events}))
    outcome = notify_bench.main(console, events)
    results.meta["notify"] = [r.row() for r in outcome]
    results.meta["finished"] = datetime.now().isoformat(timespec="seconds")
    console.print(f"results: {write_json(results, args.results_dir)}")
    return int(any(r.error for r in outcome))


def _run_report(args: argparse.Namespace) -> int:
    runs = args.runs or (5 if args.quick else 30)
    results = Results(meta=_meta(args, {"runs": runs}))
    outcome = report_render.main(console, runs)
    results.meta["report"] = [r.row() for r in outcome]
    results.meta["finished"] = datetime.now().isoformat(timespec="seconds")
    console.print(f"results: {write_json(results, args.results_dir)}")
    return int(any(r.error for r in outcome))


def _run_delete(
    args: argparse.Namespace, names: list[str], dataset: Dataset, results: Results, root: Path
) -> int:
    rounds = max(args.rounds, 3)
    try:
        outcome = delete_bench.main(
            console, root, dataset.ct, names, rounds=rounds, s3=backing.s3_server_name(args.s3)
        )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    results.meta["delete"] = [r.row() for r in outcome]
    results.meta["finished"] = datetime.now().isoformat(timespec="seconds")
    console.print(f"results: {write_json(results, args.results_dir)}")
    return int(any(r.error for r in outcome))


def run_target(
    name: str,
    root: Path,
    args: argparse.Namespace,
    sizes: dict[str, int],
    dataset: Dataset,
    results: Results,
    *,
    round_no: int,
    plan: load.Plan,
) -> None:
    want_store = args.suite in ("store", "all")
    want_load = args.suite == "load" and name in LOAD_TARGETS
    if args.suite == "load" and not want_load:
        console.log(f"{name}: the load suite runs against Noctis targets only; skipped")
        return
    target = make_target(
        name,
        root,
        pg_durable=args.pg_fsync == "on",
        web=args.suite in ("web", "all"),
        s3=backing.s3_server_name(args.s3),
    )
    want_web = args.suite in ("web", "all") and target.queryable
    if not (want_store or want_web or want_load):
        return
    results.labels[name] = target.label
    info = results.targets.setdefault(name, {})
    info.setdefault("load_at_start", []).append(list(load_average()))
    held: list[FileSet] = []
    try:
        with console.status(f"starting {target.label}"):
            target.start()
        info.update(target.details)
        console.log(f"{target.label} started (DICOM port {target.dicom_port})")
        if want_store:
            other = target.other_scp_processes() if isinstance(target, NoctisTarget) else None
            store_cases = store.cases(dataset, other_scp_processes=other)
            for case in store_cases:
                with console.status(f"{target.label}: {case.description}"):
                    case_results = store.run_cases(target, [case])
                for result in case_results:
                    result.round = round_no
                    held.append(case.files)
                    results.store.append(result)
                    _log_store(target, result)
        else:
            with console.status(f"{target.label}: loading data"):
                store.load(target, [dataset.ct, dataset.small])
            held += [dataset.ct, dataset.small]
        if want_load:
            _run_load(target, dataset, plan, results, round_no=round_no)
        if want_web:
            target.restore()
            _run_queries(
                target, dataset, held, sizes["runs"], results, gzip=args.gzip, round_no=round_no
            )
        info.update(target.details)
    except (BenchError, OSError, RuntimeError, ValueError) as exc:
        info["error"] = f"round {round_no}: {exc}" if args.rounds > 1 else str(exc)
        console.print(f"[red]{target.label} failed:[/red] {exc}")
    finally:
        with console.status(f"stopping {target.label}"):
            target.stop()


def _run_queries(
    target: Target,
    dataset: Dataset,
    held: list[FileSet],
    runs: int,
    results: Results,
    *,
    gzip: bool,
    round_no: int,
) -> None:
    expected = sum(fs.wildcard_studies for fs in held)
    with console.status(f"{target.label}: DICOMweb"):
        timings = web.bench_dicomweb(
            target, dataset, expected_studies=expected, runs=runs, gzip=gzip
        )
    with console.status(f"{target.label}: C-FIND"):
        timings.append(query.bench_cfind(target, expected=expected, runs=runs))
    for timing in timings:
        timing.round = round_no
        results.timings.append(timing)
        if timing.ok:
            console.log(
                f"{target.label}: {timing.name}: median {timing.median_ms:.1f} ms, "
                f"p95 {timing.p95_ms:.1f} ms ({timing.detail})"
            )
        else:
            console.log(f"[red]{target.label}: {timing.name} failed: {timing.error}[/red]")


def _run_load(
    target: Target, dataset: Dataset, plan: load.Plan, results: Results, *, round_no: int
) -> None:
    def done(phase: load.LoadPhase) -> None:
        phase.round = round_no
        results.load.append(phase)
        stores = f", stores {phase.instances_per_s:,.1f} inst/s" if phase.instances else ""
        flood = f", flood {phase.flood.get('answers', phase.flood)}" if phase.flood else ""
        console.log(
            f"{target.label}: load {phase.phase}: {phase.legitimate_errors} legitimate errors, "
            f"QIDO p95 {phase.qido.p95_ms:,.0f} ms, metadata p95 {phase.metadata.p95_ms:,.0f} ms"
            f"{stores}{flood}"
        )

    with console.status(f"{target.label}: load phases {', '.join(load.PHASES)}"):
        load.run_phases(target, dataset, plan, done)


def _log_store(target: Target, result: store.StoreResult) -> None:
    if result.ok:
        cpu = result.cpu_ms
        console.log(
            f"{target.label}: {result.case}: {result.instances_per_s:,.0f} inst/s, "
            f"{result.mb_per_s:,.0f} MB/s, peak RSS {result.peak_rss_mb:,.0f} MB, "
            f"CPU/inst server {cpu.get('server', 0):.1f} ms, machine "
            f"{cpu.get('machine', 0):.1f} ms ({result.machine_busy:.0%} busy)"
        )
    else:
        console.log(f"[red]{target.label}: {result.case} failed: {result.error}[/red]")


def _meta(args: argparse.Namespace, sizes: dict[str, int]) -> dict[str, Any]:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "started": datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "suite": args.suite,
        "mode": "quick" if args.quick else "full",
        "sizes": sizes,
        "pg_fsync": args.pg_fsync,
        "s3": backing.s3_server_name(args.s3),
        "http_accept_encoding": "gzip, deflate" if args.gzip else "identity",
        "host": {
            "name": platform.node(),
            "cpus": os.cpu_count(),
            "memory_gb": round(memory / 2**30, 1),
            "python": platform.python_version(),
            "load_before": list(load_average()),
        },
        "git": _git(),
    }


def _git() -> dict[str, Any]:
    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        return result.stdout.strip()

    changed = git("status", "--porcelain", "--", "src").splitlines()
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_src_files": len(changed)}


def _interrupt(signum: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    raise SystemExit(main())
