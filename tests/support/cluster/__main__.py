"""``python -m support.cluster up|down|status``: what ``scripts/cluster`` runs."""

from __future__ import annotations

import argparse
import json
import sys

from support.cluster import cluster
from support.kube import TestbedError
from support.wait import WaitTimeout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/cluster",
        description="A one-node Kubernetes cluster on this machine, with Noctis installed.",
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--json", action="store_true", help="status: print JSON")
    parser.add_argument(
        "--purge", action="store_true", help="down: remove the node's image store too"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            running = cluster.up()
            for line in cluster.assignments(running):
                print(line)
        elif args.command == "down":
            cluster.down(purge=args.purge)
        else:
            report = cluster.status()
            if args.json:
                print(json.dumps(report, indent=2))
            else:
                print(cluster.describe(report))
            return 0 if report.get("phase") == "running" else 3
    except (TestbedError, WaitTimeout) as error:
        print(f"cluster: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
