"""Wait, at start, until the API server serves every kind the operator watches.

An API server answers 429 "storage is (re)initializing" for a while after a CRD is created or
the server restarts (the Helm chart installs the CRDs just before the operator). kopf's
watchers retry that on their own, but log each attempt as an ERROR; listing each kind here
first, patiently and at INFO, lets the watchers start on a server that answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

from noctis.operator.kinds import Resource
from noctis.operator.kube import ApiException, Kube

log = logging.getLogger(__name__)

_NOT_YET = {404, 429, 503}  # CRD not yet known, storage initialising, server starting


def wait_until_served(
    kube: Kube,
    resources: Iterable[Resource],
    namespaces: Sequence[str | None],
    *,
    timeout: float = 120.0,
    interval: float = 1.0,
) -> None:
    """List each resource in each namespace (None: cluster-wide) until it answers; after
    ``timeout`` give up quietly (kopf's watchers keep retrying, as before)."""
    deadline = time.monotonic() + timeout
    for resource in resources:
        for namespace in namespaces:
            while True:
                try:
                    kube.request("GET", resource.path(namespace), query={"limit": "1"})
                    break
                except ApiException as exc:
                    if exc.status not in _NOT_YET:
                        raise
                    if time.monotonic() > deadline:
                        log.warning(
                            "%s not served yet after %.0f s (HTTP %s); starting anyway",
                            resource.plural,
                            timeout,
                            exc.status,
                        )
                        return
                    log.info(
                        "waiting for the API server to serve %s (HTTP %s)",
                        resource.plural,
                        exc.status,
                    )
                    time.sleep(interval)
