"""A login flood: clients POSTing /login with random user names and passwords, without pause.

It runs as a process of its own (`python -m bench.flood URL --clients 40`), started and stopped
by `LoginFlood`, so that its CPU and its event loop stay apart from the legitimate clients' (a
busy loop would add its own delay to their latency figures). It floods until SIGTERM (or
`--max-seconds`, or its parent is gone), then prints one JSON line: the answers it got by
status code (or by the exception when none came), how many, over how long, and its own CPU
seconds.

The form is what a browser's login form sends (no Origin or Sec-Fetch-Site header: a
script, not a page; a cross-site guard lets it through). Every attempt has a new random user
name, so no per-user lockout ever applies; a server that rate-limits by address answers 429.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
REQUEST_TIMEOUT = 60.0  # an answer slower than this counts as "TimeoutError"


def run_async(main: Coroutine[Any, Any, Any]) -> Any:
    """Run `main` on uvloop when installed (uvicorn[standard] brings it): a client loop that
    costs less CPU leaves more of the shared cores to the server under test."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def flood(url: str, clients: int, max_seconds: float) -> dict[str, Any]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    answers: Counter[str] = Counter()
    pending = 0  # attempts sent and not answered yet
    names = random.Random(os.getpid())
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client() -> None:
            nonlocal pending
            while not stop.is_set():
                form = {
                    "username": f"u{names.getrandbits(48):012x}",
                    "password": f"p{names.getrandbits(64):016x}",
                }
                pending += 1
                try:
                    async with session.post(url, data=form, allow_redirects=False) as response:
                        await response.read()
                    answers[str(response.status)] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    answers[type(exc).__name__] += 1
                finally:
                    pending -= 1

        async def orphaned() -> None:  # the benchmark died without stopping us
            parent = os.getppid()
            while os.getppid() == parent:
                await asyncio.sleep(0.5)
            stop.set()

        began = time.monotonic()
        watchdog = asyncio.create_task(orphaned())
        workers = [asyncio.create_task(client()) for _ in range(clients)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max_seconds)
        seconds = time.monotonic() - began
        unanswered = pending  # attempts in flight at the end: cancelled, counted apart
        for task in (watchdog, *workers):
            task.cancel()
        await asyncio.gather(watchdog, *workers, return_exceptions=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "answers": dict(answers),
        "requests": sum(answers.values()),
        "unanswered": unanswered,
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
    }


class LoginFlood:
    """The flood process, from `start()` to `stop()`; `stop()` gives its JSON report."""

    def __init__(self, url: str, *, clients: int, max_seconds: float) -> None:
        self.argv = [
            sys.executable,
            "-m",
            "bench.flood",
            url,
            "--clients",
            str(clients),
            "--max-seconds",
            str(max_seconds),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        path = os.environ.get("PYTHONPATH", "")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), path) if p)}
        self.process = subprocess.Popen(
            self.argv,
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C reaches the benchmark, which stops it
        )

    def stop(self) -> dict[str, Any]:
        """SIGTERM, then its report; {"error": ...} if it failed or had to be killed."""
        process, self.process = self.process, None
        if process is None:
            return {"error": "not started"}
        if process.poll() is None:
            process.terminate()
        try:
            output, errors = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            return {"error": "the flood did not stop within 30 s (killed)"}
        try:
            return dict(json.loads(output.decode().strip().splitlines()[-1]))
        except (ValueError, IndexError):
            tail = errors.decode(errors="replace").strip().splitlines()[-3:]
            return {"error": f"flood exited {process.returncode}: {' | '.join(tail)}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__)
    parser.add_argument("url", help="the login form's URL, e.g. http://127.0.0.1:8042/login")
    parser.add_argument("--clients", type=int, default=40, help="concurrent attempts")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop after this")
    args = parser.parse_args(argv)
    report = run_async(flood(args.url, args.clients, args.max_seconds))
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
