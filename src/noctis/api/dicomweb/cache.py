"""In-process caches keyed by object key.

An object key names one immutable content (ingest writes every new content under a new key),
so anything derived from an object -- its metadata JSON, its frame layout -- never goes stale:
a replaced instance simply has a new key. Entries leave only when the cache is full.
Series metadata is assembled from per-instance entries on every request, so a series that
grows needs only its new instances read.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from pydicom.dataset import Dataset

from noctis.dicom.transcode import NativeFrames, PixelLayout

Value = TypeVar("Value")

METADATA_BUDGET = 256 << 20  # bytes of cached metadata JSON
FRAME_BUDGET = 128 << 20  # bytes of frames as stored (settings.frame_cache_mb)
COMPRESSED_BUDGET = 64 << 20  # bytes of gzipped metadata documents
LAYOUT_ENTRIES = 20_000  # frame layouts with their small image attribute sets


class LRU(Generic[Value]):
    """A thread-safe least-recently-used map bounded by a total weight."""

    def __init__(self, budget: int, weigh: Callable[[Value], int] = lambda _: 1) -> None:
        self._budget = budget
        self._weigh = weigh
        self._items: OrderedDict[str, tuple[Value, int]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()
        self.misses = 0

    def get(self, key: str) -> Value | None:
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            return entry[0]

    def put(self, key: str, value: Value) -> None:
        weight = self._weigh(value)
        if weight > self._budget:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._weight -= old[1]
            self._items[key] = (value, weight)
            self._weight += weight
            while self._weight > self._budget:
                _, (_, dropped) = self._items.popitem(last=False)
                self._weight -= dropped

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._weight = 0


def _layout_weight(entry: tuple[Dataset, PixelLayout]) -> int:
    """A layout listing many fragments weighs as much as many small ones: the cache holds
    20,000 one-frame layouts, or one of 2^18 fragments, not 20,000 of those."""
    frames = entry[1].frames
    return 1 if isinstance(frames, NativeFrames) else 1 + len(frames) // 16


class DicomWebCache:
    def __init__(
        self,
        metadata_budget: int = METADATA_BUDGET,
        layout_entries: int = LAYOUT_ENTRIES,
        frame_budget: int = FRAME_BUDGET,
    ) -> None:
        # object key -> one instance's metadata JSON, with a placeholder for the base URL
        self.metadata: LRU[bytes] = LRU(metadata_budget, len)
        # hash of (base URL, object keys) -> the gzipped metadata document
        self.compressed: LRU[bytes] = LRU(COMPRESSED_BUDGET, len)
        # object key -> (image attributes, frame layout)
        self.layouts: LRU[tuple[Dataset, PixelLayout]] = LRU(layout_entries, _layout_weight)
        # "object key#frame number" -> the frame's bytes as stored. A viewer reads each frame
        # at least twice (the image, then again while scrolling or for a second viewport),
        # and from S3 each read is a round trip (as Orthanc's storage cache, 128 MB).
        self.frames: LRU[bytes] = LRU(frame_budget, len)
