"""Delete Noctis resources one after another, each gone (its finalizer done) before the next.

    python -m noctis.operator.teardown --namespace NS [--timeout S] KIND/NAME...

KIND is a plural of ours: dicomnodes, archives, facilities, storagepools. The chart's quickstart
runs this as a pre-delete hook, while the operator and the database are still up: a Facility's
and a StoragePool's finalizers need both (the facility is disabled in the registry; a `Retain`
pool keeps its bucket), and `helm uninstall` deletes everything at once otherwise, leaving
them stuck with nobody to finish them.
"""

from __future__ import annotations

import argparse
import sys
import time

from noctis.operator.kinds import OWN_RESOURCES, Resource
from noctis.operator.kube import Kube, load_configuration

BY_PLURAL = {r.plural: r for r in OWN_RESOURCES.values()}


class TeardownError(RuntimeError):
    pass


def parse_target(text: str) -> tuple[Resource, str]:
    plural, _, name = text.partition("/")
    if plural not in BY_PLURAL or not name:
        raise TeardownError(
            f"expected KIND/NAME with KIND one of {', '.join(sorted(BY_PLURAL))}: {text!r}"
        )
    return BY_PLURAL[plural], name


def delete_and_wait(
    kube: Kube, resource: Resource, namespace: str, name: str, deadline: float
) -> bool:
    """Delete one object and wait until the API server no longer has it; False if it was not
    there."""
    if kube.get(resource, namespace, name) is None:
        return False
    kube.delete(resource, namespace, name)
    while kube.get(resource, namespace, name) is not None:
        if time.monotonic() > deadline:
            raise TeardownError(
                f"{resource.kind} {namespace}/{name} is still there (its finalizer did not run: "
                "is the operator up?)"
            )
        time.sleep(1)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--timeout", type=float, default=300, help="seconds for all of them")
    parser.add_argument("targets", nargs="+", metavar="KIND/NAME")
    args = parser.parse_args(argv)
    try:
        targets = [parse_target(t) for t in args.targets]
        kube = Kube(load_configuration())
        deadline = time.monotonic() + args.timeout
        try:
            for resource, name in targets:
                started = time.monotonic()
                gone = delete_and_wait(kube, resource, args.namespace, name, deadline)
                what = f"{resource.kind} {args.namespace}/{name}"
                took = time.monotonic() - started
                print(f"{what}: deleted in {took:.1f} s" if gone else f"{what}: not there")
        finally:
            kube.close()
    except TeardownError as exc:
        print(f"teardown: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
