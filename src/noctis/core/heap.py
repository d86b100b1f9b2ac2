"""What a server process built while starting is kept out of the garbage collector's walks.

A full collection walks every object the collector tracks. After start-up a Noctis server
holds about 180,000 of them (pydicom's dictionaries, pynetdicom, SQLAlchemy, FastAPI), and a
full collection of that heap took 100-135 ms on the test machine and came every dozen or so
QIDO requests of 206 studies (each builds enough objects to bring one nearer): 3 of 40 took
140-160 ms instead of 20, and an association storing meanwhile waited as long. `settle` collects
once and freezes what is left (`gc.freeze`): those objects are never walked again, and a full
collection then walks only what came later: 1.1 ms measured.

A frozen object is still freed when its last reference goes; only a reference cycle among
frozen objects is never collected. Start-up state lives as long as the process anyway.
Called by each server process's entry point once it is ready to serve, never on import nor
from a library call (a test process would freeze its fixtures).
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def settle() -> int:
    """Collect, then freeze every object still alive; the number now frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("start-up heap settled: %d objects frozen", frozen)
    return frozen
