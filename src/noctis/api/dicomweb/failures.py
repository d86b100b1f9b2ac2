"""What the services that read stored objects (frames, bulk data, instances, rendered) answer
when reading goes wrong: one mapping of errors to HTTP statuses, one check before a long
answer starts, one way to end an answer that has started.

The statuses (PS3.18 8.5 and the Retrieve transaction's table in 10.4.3; OHIF's loaders --
dicomweb-client and the cornerstone image loader -- reject every non-2xx alike and never
retry, so the choice is for people, audit and monitoring):

- 404 Not Found: the path names a part of the instance that does not exist: a frame beyond
  the last, the frames, pixel data or rendering of an instance without pixel data
  (`FrameNotFound`).
- 406 Not Acceptable: the instance cannot be sent in any form the Accept header allows
  (`FrameNotAcceptable`).
- 500 Internal Server Error: the archive cannot read what it holds: a stored object shorter
  than the index says or a corrupt deflated stream (`StoredObjectDamaged`), pixel data that
  cannot be located or decoded (any other `FrameError`: a header that contradicts its pixel
  data, fragments that do not add up, a codec failure), a header too large to answer from.
  Never 400: the request was right, and a 5xx is what operators are alerted on. Logged.
- 503 Service Unavailable: the object store has not got the object (or does not answer).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from noctis.api.dicomweb.access import damaged, fail
from noctis.api.dicomweb.context import WebContext
from noctis.api.dicomweb.lookup import StoredInstance
from noctis.dicom.deflated import HeaderTooLarge
from noctis.dicom.errors import FrameError, StoredObjectDamaged
from noctis.storage import ObjectNotFound

log = logging.getLogger(__name__)


class FrameNotFound(FrameError):
    """The path names frames or pixel data the instance does not have."""


class FrameNotAcceptable(FrameError):
    """The frames exist but cannot be sent in a form the client accepts."""


@contextmanager
def read_failures(ctx: WebContext, action: str, instance: StoredInstance) -> Iterator[None]:
    """Turn what goes wrong reading ``instance`` into the HTTP error above (audited)."""
    try:
        yield
    except FrameNotFound as exc:
        raise fail(ctx, action, instance, 404, str(exc)) from exc
    except FrameNotAcceptable as exc:
        raise fail(ctx, action, instance, 406, str(exc)) from exc
    except FrameError as exc:
        log.error("pixel data of instance %s (%s): %s", instance.sop_uid, instance.object_key, exc)
        message = f"the instance's pixel data cannot be read: {exc}"
        raise fail(ctx, action, instance, 500, message) from exc
    except StoredObjectDamaged as exc:
        raise damaged(ctx, action, instance, exc) from exc
    except HeaderTooLarge as exc:
        raise fail(ctx, action, instance, 500, str(exc)) from exc
    except ObjectNotFound as exc:
        raise fail(ctx, action, instance, 503, "the stored object is unavailable") from exc


def check_reaches(read: Callable[[int, int], bytes] | None, last_byte: int) -> None:
    """StoredObjectTruncated unless the object reaches ``last_byte``: one tiny read before a
    long answer starts, so a short object is a 500, not a cut-off 200."""
    if read is not None and last_byte > 0:
        read(last_byte - 1, 1)


def ended_early(chunks: Iterator[bytes], what: str, instance: StoredInstance) -> Iterator[bytes]:
    """``chunks`` of an answer whose status has gone out: an error ends it without its
    closing delimiter (the only way left to tell the client it is incomplete), logged."""
    try:
        yield from chunks
    except Exception as exc:
        log.error("%s of %s ended early: %r", what, instance.sop_uid, exc, exc_info=True)
        raise
