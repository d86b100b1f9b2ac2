"""What routing reports: per route and destination, transfers pending, sent, failed and dead
and the latest error (the CLI, REST, the Route CR's status and /metrics all show this)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from noctis.core.routing import list_routes
from noctis.core.transfers import DestinationProgress, progress

STATES = ("pending", "sent", "failed", "dead")


def route_reports(session: Session, *, facilities: set[str] | None = None) -> list[dict[str, Any]]:
    """One report per route (of ``facilities`` only, when given), with every destination it
    names (zeros for one that has no transfer yet)."""
    routes = [
        (route, facility)
        for route, facility in list_routes(session)
        if facilities is None or facility in facilities
    ]
    table = progress(session, [route.id for route, _ in routes])
    reports = []
    for route, facility in routes:
        by_destination = {entry.destination: entry for entry in table.get(route.id, [])}
        entries = [
            by_destination.get(ae, DestinationProgress(ae)).as_dict() for ae in route.destinations
        ]
        # Transfers to a destination the route no longer names still count until they end.
        entries += [
            entry.as_dict() for ae, entry in by_destination.items() if ae not in route.destinations
        ]
        reports.append(
            {
                "name": route.name,
                "namespace": route.namespace,
                "facility": facility,
                "trigger": route.trigger,
                "enabled": route.enabled,
                "destinations": entries,
                "totals": {state: sum(int(e[state]) for e in entries) for state in STATES},
            }
        )
    return reports


def metrics_text(session: Session) -> bytes:
    """Transfers per route, destination and state, in Prometheus' text format, read from the
    index when /metrics is scraped (what a worker sent is in the index, not in the scraped
    process's memory): the transfers not sent yet are counted, the sent ones are counters."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    routes = list_routes(session)
    table = progress(session, [route.id for route, _ in routes])
    family = GaugeMetricFamily(
        "noctis_route_transfers",
        "Routing transfers (instance x destination) by facility, route, destination and state "
        "(pending includes those being sent)",
        labels=("facility", "route", "destination", "state"),
    )
    for route, facility in routes:
        for entry in table.get(route.id, []):
            for state in STATES:
                family.add_metric(
                    (facility, route.name, entry.destination, state), getattr(entry, state)
                )

    class _Collector:
        def collect(self) -> Any:
            yield family

    registry = CollectorRegistry()
    registry.register(_Collector())  # type: ignore[arg-type]
    return generate_latest(registry)
