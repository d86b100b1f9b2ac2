"""The delete scenario: time to delete a study of N instances (300 by default) over DICOMweb,
until the DELETE is answered and until every object of it is gone from the store.

`python bench/run.py delete [--targets noctis-embedded,noctis-production] [--quick]`

Each round stores the CT series (the same files every round: a deleted instance's UIDs are
free again), then sends `DELETE /dicom-web/studies/{uid}` as an administrator.
- embedded (`noctis serve`): the deletion kicks the sweep on the in-process queue;
- production (`noctis scp` + `noctis api`, PostgreSQL + S3): the benchmark starts no Celery
  worker, so it runs the sweep itself right after the answer, as the worker would
  (`noctis.core.deletion.sweep_tombstones`, the same function); "all objects gone" includes it.
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydicom import dcmread
from rich.console import Console
from rich.table import Table

from bench import store
from bench.data import FileSet
from bench.noctis import BUCKET, FACILITY, NoctisTarget
from bench.procs import BenchError, test_support
from bench.servers import make_target

TARGETS = ("noctis-embedded", "noctis-production")
ADMIN = "bench-admin"


@dataclass
class DeleteResult:
    target: str
    instances: int
    answered_ms: list[float] = field(default_factory=list)
    gone_ms: list[float] = field(default_factory=list)
    error: str = ""

    def row(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "instances": self.instances,
            "answered_ms_median": _median(self.answered_ms),
            "gone_ms_median": _median(self.gone_ms),
            "answered_ms": self.answered_ms,
            "gone_ms": self.gone_ms,
            "error": self.error,
        }


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


@contextmanager
def target_runtime(target: NoctisTarget) -> Iterator[Any]:
    """A Runtime on the target's index and store (its settings come from its environment)."""
    test_support()
    from noctis.core.runtime import Runtime
    from noctis.settings import Settings

    overrides = {k: v for k, v in target.env.items() if k.startswith("NOCTIS_")}
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        runtime = Runtime.open(Settings())  # type: ignore[call-arg]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        yield runtime
    finally:
        runtime.close()


def _admin_token(runtime: Any) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from support.web import create_user, token_for
    create_user(runtime, ADMIN, "admin", facilities=[])
    return str(token_for(runtime, ADMIN, name="bench-delete"))


def _study_objects(target: NoctisTarget, study: str) -> int:
    if target.production:
        client = target._s3.client()  # the benchmark's own S3 server
        listing = client.list_objects(BUCKET, prefix=f"{FACILITY}/{study}/", recursive=True)
        return sum(1 for _ in listing)
    return sum(1 for p in (target.data_dir / "objects").glob(f"*/{study}/**/*.dcm"))


def run(target: NoctisTarget, ct: FileSet, rounds: int) -> DeleteResult:
    result = DeleteResult(target.name, ct.count)
    study = ct.study_uid or str(dcmread(ct.files[0], stop_before_pixels=True).StudyInstanceUID)
    with target_runtime(target) as runtime:
        token = _admin_token(runtime)
        from noctis.core.deletion import sweep_tombstones

        headers = {"Authorization": f"Bearer {token}"}
        url = f"{target.dicomweb_root()}/studies/{study}"
        for _ in range(rounds):
            store.load(target, [ct])
            began = time.perf_counter()
            response = httpx.delete(url, headers=headers, timeout=120)
            answered = time.perf_counter() - began
            if response.status_code != 204:
                raise BenchError(f"DELETE answered {response.status_code}: {response.text}")
            if target.production:  # what the worker would do on the kick
                sweep_tombstones(runtime)
            deadline = time.monotonic() + 120
            while _study_objects(target, study):
                if time.monotonic() > deadline:
                    raise BenchError("objects still there 120 s after the DELETE")
                time.sleep(0.005)
            gone = time.perf_counter() - began
            result.answered_ms.append(answered * 1000)
            result.gone_ms.append(gone * 1000)
    return result


def main(
    console: Console, root: Path, ct: FileSet, names: list[str], *, rounds: int, s3: str
) -> list[DeleteResult]:
    results = []
    for name in names:
        if name not in TARGETS:
            console.log(f"{name}: the delete scenario runs against Noctis targets only; skipped")
            continue
        target = make_target(name, root / f"delete-{name}", pg_durable=True, web=True, s3=s3)
        assert isinstance(target, NoctisTarget)
        try:
            with console.status(f"starting {target.label}"):
                target.start()
            with console.status(f"{target.label}: deleting a {ct.count}-instance study"):
                result = run(target, ct, rounds)
        except (BenchError, OSError, RuntimeError, ValueError) as exc:
            result = DeleteResult(name, ct.count, error=str(exc))
            console.print(f"[red]{target.label} failed:[/red] {exc}")
        finally:
            with console.status(f"stopping {target.label}"):
                target.stop()
        results.append(result)
        if not result.error:
            console.log(
                f"{target.label}: delete {ct.count} instances: answered "
                f"{_median(result.answered_ms)} ms, all objects gone {_median(result.gone_ms)} ms "
                f"(medians of {len(result.gone_ms)})"
            )
    table = Table("target", "instances", "DELETE answered (ms)", "all objects gone (ms)")
    for result in results:
        table.add_row(
            result.target,
            str(result.instances),
            str(_median(result.answered_ms)) if not result.error else "failed",
            str(_median(result.gone_ms)) if not result.error else result.error[:60],
        )
    console.print(table)
    return results
