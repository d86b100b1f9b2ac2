"""`python bench/run.py images`: build times and sizes of the container images.

Runs scripts/build-images.sh (the same build the test suite and scripts/cluster use) and
prints, per image, how long its build took in this run (0 when its tag was already built),
whether it came from cache, and its size. `--no-cache` rebuilds the images (not the base)
without podman's layer cache: the cold build of each image, base and downloads aside.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.procs import BenchError, load_average

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "build-images.sh"


def build(*, no_cache: bool = False) -> tuple[list[dict[str, Any]], float]:
    """The script's summary lines (one per image, the base first) and its wall time."""
    with tempfile.TemporaryDirectory(prefix="noctis-bench-images-") as tmp:
        summary = Path(tmp) / "summary.jsonl"
        command = [str(SCRIPT), "--summary", str(summary)]
        if no_cache:
            command.append("--no-cache")
        started = datetime.now()
        result = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
        seconds = (datetime.now() - started).total_seconds()
        if result.returncode != 0:
            raise BenchError(f"{SCRIPT.name} failed ({result.returncode}); see its output above")
        rows = [json.loads(line) for line in summary.read_text().splitlines() if line.strip()]
    return rows, seconds


def report(rows: list[dict[str, Any]], wall: float, console: Console) -> None:
    table = Table(title=f"Container images (scripts/build-images.sh, {wall:.0f} s in all)")
    for column in ("image", "reference", "build s", "size MB"):
        table.add_column(column, justify="left" if column in ("image", "reference") else "right")
    for row in rows:
        seconds = "cached" if row["cached"] else f"{row['seconds']:.1f}"
        table.add_row(row["image"], row["ref"], seconds, f"{row['bytes'] / 1e6:,.0f}")
    console.print(table)


def main(console: Console, results_dir: Path, *, no_cache: bool) -> int:
    load_before = list(load_average())
    try:
        rows, wall = build(no_cache=no_cache)
    except BenchError as exc:
        console.print(f"[red]{exc}[/red]")
        return 1
    report(rows, wall, console)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-images.json"
    document = {
        "suite": "images",
        "no_cache": no_cache,
        "seconds": wall,
        "load_before": load_before,
        "load_after": list(load_average()),
        "images": rows,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"results: {path}")
    return 0
