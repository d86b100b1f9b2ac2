"""Ingest a Part 10 file from disk, as a receiver would: written into the store's writer for
incoming data (`noctis.storage.incoming`), then handed to `noctis.core.ingest.ingest`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from noctis.core.ingest import FacilityRef, IngestResult, ingest
from noctis.core.runtime import Runtime


def ingest_file(
    runtime: Runtime, facility: FacilityRef, path: Path, **options: Any
) -> IngestResult:
    """`ingest` of the file at ``path``; ``options`` as ingest's keywords."""
    with runtime.store.incoming() as incoming:
        with path.open("rb") as source:
            incoming.write_from(source)
        return ingest(runtime, facility, incoming, **options)
