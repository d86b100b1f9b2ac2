"""`noctis delete`, `noctis hold` and `noctis check`: deletion, legal holds and the
consistency check from the command line, on the archive the settings name (embedded or
production). A deletion here also sweeps: the objects are gone when the command returns."""

from __future__ import annotations

import getpass
from typing import Annotated

import typer
from rich.console import Console

from noctis.settings import Settings

delete_app = typer.Typer(help="Delete a study, series or instance (index rows, then objects).")
hold_app = typer.Typer(help="Legal holds: a study on hold cannot be deleted.")
check_app = typer.Typer(help="Checks of the archive.")
console = Console(stderr=True)

FacilityOption = Annotated[
    str | None, typer.Option("--facility", "-F", help="the facility (when several hold the UID)")
]


def _runtime():  # type: ignore[no-untyped-def]
    from noctis.core.runtime import Runtime

    try:
        return Runtime.open(Settings())
    except Exception as exc:
        console.print(f"[red]cannot open the archive:[/red] {exc}")
        raise typer.Exit(2) from exc


def _actor():  # type: ignore[no-untyped-def]
    from noctis.core.deletion import Actor

    return Actor(f"cli:{getpass.getuser()}", "user", "local")


def _facility_id(runtime, study: str, name: str | None) -> int:  # type: ignore[no-untyped-def]
    from noctis.core.deletion import facilities_holding

    holding = facilities_holding(runtime, study)
    if name is not None:
        holding = [(i, n) for i, n in holding if n == name]
    if not holding:
        console.print(f"[red]study {study} not found[/red]")
        raise typer.Exit(1)
    if len(holding) > 1:
        names = ", ".join(n for _, n in holding)
        console.print(f"[red]study {study} is held by facilities {names}: add --facility[/red]")
        raise typer.Exit(1)
    return holding[0][0]


def _delete(study: str, series: str | None, sop: str | None, facility: str | None) -> None:
    from noctis.core.deletion import (
        DeletionRefused,
        NothingToDelete,
        Target,
        delete,
        sweep_tombstones,
    )

    runtime = _runtime()
    try:
        target = Target(_facility_id(runtime, study, facility), study, series, sop)
        try:
            deleted = delete(runtime, target, _actor())
        except NothingToDelete as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
        except DeletionRefused as exc:
            console.print(f"[red]refused:[/red] {exc}")
            raise typer.Exit(3) from exc
        swept = sweep_tombstones(runtime)
    finally:
        runtime.close()
    console.print(
        f"deleted {target.level} {sop or series or study}: {deleted.instances} instance(s), "
        f"{deleted.size_bytes} bytes; {swept.removed} object(s) and prefixes swept"
        + (f", {swept.failed} left for the next sweep" if swept.failed else "")
    )


@delete_app.command("study")
def delete_study(study: str, facility: FacilityOption = None) -> None:
    """Delete a study."""
    _delete(study, None, None, facility)


@delete_app.command("series")
def delete_series(study: str, series: str, facility: FacilityOption = None) -> None:
    """Delete one series of a study."""
    _delete(study, series, None, facility)


@delete_app.command("instance")
def delete_instance(
    study: str, series: str, instance: str, facility: FacilityOption = None
) -> None:
    """Delete one instance."""
    _delete(study, series, instance, facility)


@hold_app.command("set")
def hold_set(
    study: str,
    reason: Annotated[str, typer.Option("--reason", help="why (shown when a deletion is refused)")],
    facility: FacilityOption = None,
) -> None:
    """Put a study on legal hold (or change its reason)."""
    from noctis.core.deletion import HoldError, place_hold

    runtime = _runtime()
    try:
        hold = place_hold(runtime, _facility_id(runtime, study, facility), study, reason, _actor())
    except (HoldError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        runtime.close()
    console.print(f"study {study} ({hold.facility}) is on legal hold: {hold.reason}")


@hold_app.command("clear")
def hold_clear(study: str, facility: FacilityOption = None) -> None:
    """Clear a study's legal hold."""
    from noctis.core.deletion import HoldError, clear_hold

    runtime = _runtime()
    try:
        clear_hold(runtime, _facility_id(runtime, study, facility), study, _actor())
    except HoldError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        runtime.close()
    console.print(f"study {study}: legal hold cleared")


@hold_app.command("show")
def hold_show(study: str, facility: FacilityOption = None) -> None:
    """Show a study's legal hold (exit 1 if it has none)."""
    from noctis.core.deletion import get_hold

    runtime = _runtime()
    try:
        hold = get_hold(runtime, _facility_id(runtime, study, facility), study)
    finally:
        runtime.close()
    if hold is None:
        console.print(f"study {study} is not on legal hold")
        raise typer.Exit(1)
    since = f"{hold.placed_at:%Y-%m-%d %H:%M}"
    console.print(f"on hold since {since} by {hold.placed_by}: {hold.reason}")


@check_app.command("consistency")
def check_consistency_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="report only: remove no orphan object")
    ] = False,
) -> None:
    """Objects without index rows and index rows without objects; repaired per the policy
    (orphans older than the grace period removed; missing objects reported, never deleted).
    Exit 1 if an index row's object is missing."""
    from noctis.core.consistency import check_consistency

    runtime = _runtime()
    try:
        report = check_consistency(runtime, repair=not dry_run)
    finally:
        runtime.close()
    if report.skipped:
        console.print("another process is checking right now: try again later")
        raise typer.Exit(2)
    verb = "found" if dry_run else "removed"
    console.print(
        f"checked {report.checked_objects} object(s) and {report.checked_rows} index row(s): "
        f"{len(report.orphans_removed)} orphan object(s) {verb}, "
        f"{report.orphans_young} within the grace period left alone, "
        f"{len(report.missing)} index row(s) without their object"
    )
    for key in report.missing[:50]:
        console.print(f"  missing: {key}")
    raise typer.Exit(1 if report.missing else 0)
