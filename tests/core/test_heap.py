"""A server process's start-up heap is frozen (``noctis.core.heap.settle``): full collections then
walk only what came after start-up, and garbage made later is still collected. Run in a fresh
interpreter, so this test process's own heap is left alone."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import gc, json, weakref
import noctis.api.app, noctis.scp.server  # what a server imports before it serves
from noctis.core import heap

walked_before = len(gc.get_objects())
frozen = heap.settle()
walked_after = len(gc.get_objects())

class Node:
    pass

a, b = Node(), Node()
a.other, b.other = b, a  # a reference cycle made after start-up
gone = weakref.ref(a)
del a, b
gc.collect()
print(json.dumps({"before": walked_before, "after": walked_after, "frozen": frozen,
                  "cycle_collected": gone() is None}))
"""


def test_start_up_objects_are_no_longer_walked_and_later_garbage_is_collected() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["frozen"] > 50_000, found  # the libraries a server imports
    assert found["after"] < found["before"] / 10, found
    assert found["cycle_collected"], found
