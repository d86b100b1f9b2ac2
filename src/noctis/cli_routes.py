"""`noctis route apply|list|delete|retry`: routing rules on one machine (embedded mode), and
the dead letters of any archive whose index this process can reach."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from noctis.settings import Settings

route_app = typer.Typer(help="Routing: forward a facility's studies to other DICOM nodes.")
console = Console(stderr=True)


def _runtime():  # type: ignore[no-untyped-def]
    from noctis.core.runtime import Runtime

    try:
        settings = Settings()
    except ValidationError as exc:
        console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc
    return Runtime.open(settings)


@route_app.command("apply")
def route_apply(
    file: Annotated[Path, typer.Option("-f", "--file", help="Route YAML (the CR's shape)")],
) -> None:
    """Create or update routes from a YAML file (one or more documents)."""
    from noctis.core.routing import RouteRefused, apply_route
    from noctis.specs.route import RouteDocument

    try:
        documents = [d for d in yaml.safe_load_all(file.read_text()) if d]
        routes = [RouteDocument.model_validate(d) for d in documents]
    except (OSError, yaml.YAMLError) as exc:
        console.print(f"[red]cannot read {file}:[/red] {exc}")
        raise typer.Exit(2) from exc
    except ValidationError as exc:
        console.print(f"[red]invalid route spec in {file}:[/red]\n{exc}")
        raise typer.Exit(2) from exc
    runtime = _runtime()
    try:
        with runtime.sessions.begin() as session:
            for document in routes:
                apply_route(session, document.name, document.spec)
    except RouteRefused as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        runtime.close()
    for document in routes:
        spec = document.spec
        console.print(
            f"route {document.name} (facility {spec.facility}, trigger {spec.trigger.value}): "
            f"to {', '.join(spec.destinations)}"
        )


@route_app.command("list")
def route_list(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show the routes and their progress per destination."""
    from noctis.core.routing_status import route_reports

    runtime = _runtime()
    try:
        with runtime.sessions() as session:
            reports = route_reports(session)
    finally:
        runtime.close()
    if as_json:
        print(json.dumps(reports, indent=2))
        return
    table = Table(
        "facility", "route", "trigger", "destination", "pending", "sent", "failed", "dead",
        "last error",
    )  # fmt: skip
    for report in reports:
        for entry in report["destinations"]:
            table.add_row(
                report["facility"],
                report["name"],
                report["trigger"] + ("" if report["enabled"] else " (disabled)"),
                entry["destination"],
                *(str(entry[k]) for k in ("pending", "sent", "failed", "dead")),
                entry["lastError"],
            )
    Console().print(table)


@route_app.command("delete")
def route_delete(
    name: Annotated[str, typer.Argument()],
    facility: Annotated[str, typer.Option("--facility", "-F", help="the route's facility")],
) -> None:
    """Remove a route and its transfers (what was sent stays sent)."""
    from noctis.core.routing import delete_route

    runtime = _runtime()
    try:
        with runtime.sessions.begin() as session:
            found = delete_route(session, facility, name)
    finally:
        runtime.close()
    if not found:
        console.print(f"[red]no route {name} in facility {facility}[/red]")
        raise typer.Exit(1)
    console.print(f"route {name} deleted")


@route_app.command("retry")
def route_retry(
    name: Annotated[str | None, typer.Argument(help="only this route's dead letters")] = None,
    facility: Annotated[str | None, typer.Option("--facility", "-F")] = None,
    destination: Annotated[str | None, typer.Option("--destination", "-d")] = None,
) -> None:
    """Send dead letters again (with a fresh count of attempts)."""
    from noctis.core.queue import FORWARD_TO_DESTINATION, destination_queue
    from noctis.core.transfers import retry_dead

    runtime = _runtime()
    try:
        with runtime.sessions.begin() as session:
            counts = retry_dead(session, facility=facility, route=name, destination=destination)
        for ae in counts:  # without a worker here, the next periodic tick sends them
            runtime.queue.send(FORWARD_TO_DESTINATION, queue=destination_queue(ae), destination=ae)
    finally:
        runtime.close()
    total = sum(counts.values())
    console.print(
        f"{total} dead letter(s) pending again"
        + (": " + ", ".join(f"{ae} {n}" for ae, n in sorted(counts.items())) if counts else "")
    )
