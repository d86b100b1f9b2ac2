"""Where the frames of encapsulated pixel data lie: its items (offset table, fragments) and
which fragments make each frame.

The items are walked through ``read(offset, length)`` of the value, so a stored object is
read through a ``Window`` of a few MB: the headers of a 100 MB value of large fragments cost
a few reads, never the value held whole.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from pydicom.dataset import Dataset

from noctis.dicom.errors import FrameError, StoredObjectTruncated

_ITEM = 0xFFFEE000
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
# Each fragment costs a few hundred bytes of bookkeeping: a crafted object of empty items
# must not turn 100 MB of data into gigabytes of it. Real multi-frame objects (whole slide
# images included) stay far below.
MAX_FRAGMENTS = 1 << 18
WINDOW = 4 << 20

Read = Callable[[int, int], bytes | memoryview]
Groups = list[list[tuple[int, int]]]  # per frame: (item offset in the value, value length)


class Window:
    """``read(offset, length)`` of a value, through one window of up to WINDOW bytes read
    at a time: the item headers of a value read front to back cost a read per window, and
    a window starts at the next header, so large fragments are passed over unread."""

    def __init__(self, read: Read, total: int) -> None:
        self.read = read
        self.total = total
        self.start = 0
        self.data: bytes | memoryview = b""

    def __call__(self, offset: int, length: int) -> bytes | memoryview:
        if not (self.start <= offset and offset + length <= self.start + len(self.data)):
            if length > WINDOW:
                return self.read(offset, length)
            self.start = offset
            self.data = memoryview(self.read(offset, min(self.total - offset, WINDOW)))
        begin = offset - self.start
        return self.data[begin : begin + length]


def fragment_groups(
    image: Dataset, read: Read, total: int, expected: int, tails: Read | None = None
) -> Groups:
    """The fragments of each frame of an encapsulated value of ``total`` bytes, read through
    ``read(offset, length)``; ``expected`` is the header's Number of Frames, ``tails`` a
    read for the last bytes of fragments (when frames must be told apart by their end)."""
    items = _items(read, total)
    if not items:
        raise FrameError("encapsulated pixel data has no items")
    bot_offset, bot_length = items[0]
    table = read(bot_offset + 8, bot_length)
    basic = list(struct.unpack_from(f"<{bot_length // 4}L", table))
    fragments = items[1:]
    if not fragments:
        raise FrameError("encapsulated pixel data has no fragments")
    return _group_fragments(image, tails or read, fragments, basic, expected)


def _items(read: Read, total: int) -> list[tuple[int, int]]:
    items: list[tuple[int, int]] = []
    position = 0
    while position + 8 <= total:
        group, element, length = struct.unpack_from("<HHL", read(position, 8))
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITER:
            break
        if tag != _ITEM or length == _UNDEFINED:
            raise FrameError(f"unexpected tag {tag:08X} in encapsulated pixel data")
        if position + 8 + length > total:
            raise StoredObjectTruncated("an encapsulated pixel data item runs past the object")
        if len(items) > MAX_FRAGMENTS:
            raise FrameError(f"encapsulated pixel data of more than {MAX_FRAGMENTS} fragments")
        items.append((position, length))
        position += 8 + length
    return items


def _group_fragments(
    image: Dataset, read: Read, fragments: list[tuple[int, int]], basic: list[int], expected: int
) -> Groups:
    first = fragments[0][0]
    extended = image.get("ExtendedOffsetTable")
    if extended:
        offsets = struct.unpack(f"<{len(extended) // 8}Q", extended)
        by_offset = {offset - first: (offset, length) for offset, length in fragments}
        try:
            return [[by_offset[o]] for o in offsets]
        except KeyError as exc:
            raise FrameError("extended offset table does not match the fragments") from exc
    if basic:
        bounds = [*basic, 1 << 62]
        groups: Groups = [[] for _ in basic]
        frame = 0
        for offset, length in fragments:
            while frame + 1 < len(basic) and offset - first >= bounds[frame + 1]:
                frame += 1
            groups[frame].append((offset, length))
        return groups
    if expected == 1:
        return [list(fragments)]
    if len(fragments) == expected:
        return [[fragment] for fragment in fragments]
    if len(fragments) < expected:
        raise FrameError("fewer fragments than frames and no offset table")
    # More fragments than frames and no offset table: a JPEG-family frame ends with EOI/EOC.
    groups, current = [], []
    for offset, length in fragments:
        current.append((offset, length))
        tail = bytes(read(offset + 8 + max(0, length - 10), min(length, 10)))
        if b"\xff\xd9" in tail:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups
