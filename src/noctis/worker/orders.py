"""Linking arrived studies to their orders, on a clock (`noctis.core.orders.link_arrivals`).

A periodic job rather than a step of ingest: the write path stays as it is, and a study that
arrived before its order was entered (or while the job's worker was down) is linked at the
next tick all the same. Orders without a study are few, so each run is cheap.
"""

from __future__ import annotations

import logging

from noctis.core.orders import link_arrivals
from noctis.core.runtime import Runtime
from noctis.worker.periodic import PeriodicJob

log = logging.getLogger(__name__)


def link_orders(runtime: Runtime) -> int:
    linked = link_arrivals(runtime)
    if linked:
        log.info("linked %d arrived stud%s to their orders", linked, "y" if linked == 1 else "ies")
    return linked


ORDER_LINKING = PeriodicJob(
    "order-linking", lambda settings: settings.order_link_seconds, link_orders
)
