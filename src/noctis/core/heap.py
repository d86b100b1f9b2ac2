"""What a server process built while starting is kept out of the garbage collector's walks.

A full collection walks every object the collector tracks. After start-up a Noctis server
holds a large heap of them (pydicom's dictionaries, pynetdicom, SQLAlchemy, FastAPI), and
requests that build many objects (a QIDO answer of a few hundred studies) bring a full
collection near often: walking that whole heap stalls the request, and an association storing
meanwhile waits as long (bench/README.md has the figures). `settle` collects once and freezes
what is left (`gc.freeze`): those objects are never walked again, and a full collection then
walks only what came later.

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
