"""The `noctis` command: the composition root that builds settings and starts processes.

Process packages are imported inside their command, so `noctis migrate` does not need the
web or Kubernetes dependencies installed.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from noctis.cli_lifecycle import check_app, delete_app, hold_app
from noctis.cli_routes import route_app
from noctis.settings import Settings

app = typer.Typer(help="Noctis: a Kubernetes-native PACS.", no_args_is_help=True)
facility_app = typer.Typer(help="The facility registry: who may send, query and retrieve.")
app.add_typer(facility_app, name="facility")
app.add_typer(route_app, name="route")
user_app = typer.Typer(help="Local users of the web side (viewer, DICOMweb, REST).")
app.add_typer(user_app, name="user")
app.add_typer(delete_app, name="delete")
app.add_typer(hold_app, name="hold")
app.add_typer(check_app, name="check")
console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"noctis {version('noctis')}")
        raise typer.Exit()


@app.callback()
def _root(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Noctis: a Kubernetes-native PACS."""


def _settings(**overrides: object) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


DataDir = Annotated[Path | None, typer.Option(help="data directory (embedded mode)")]


@app.command()
def migrate(
    wait: Annotated[
        float,
        typer.Option(help="seconds to wait for the database to answer first (0: fail at once)"),
    ] = 0,
) -> None:
    """Bring the index database schema up to date."""
    from noctis.index.migrate import DatabaseUnavailable, upgrade, wait_for_database

    settings = _settings()
    url = settings.resolved_database_url()
    if wait > 0:
        _logging()
        try:
            wait_for_database(url, wait)
        except DatabaseUnavailable as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
    upgrade(url)
    console.print("index schema is up to date")


@app.command()
def serve(
    data_dir: DataDir = None,
    port: Annotated[int | None, typer.Option(help="DICOM port")] = None,
    http_port: Annotated[int | None, typer.Option(help="web port")] = None,
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
) -> None:
    """Run the whole archive on embedded defaults: SCP, web API, viewer and tasks."""
    from noctis.embedded import serve as run_embedded
    from noctis.embedded import serve_scp_processes

    _logging()
    settings = _settings(
        data_dir=data_dir, scp_port=port, api_port=http_port, scp_host=host, api_host=host
    )
    if "scp_processes" not in settings.model_fields_set:
        settings = settings.model_copy(update={"scp_processes": serve_scp_processes()})
    run_embedded(settings)


@app.command()
def scp() -> None:
    """Run the DICOM SCP alone (production: PostgreSQL + S3 from settings)."""
    from noctis.scp.process import run

    _logging()
    run(_settings())


@app.command()
def api() -> None:
    """Run the web API (DICOMweb, REST, viewer)."""
    from noctis.api.server import run

    _logging()
    run(_settings())


@app.command()
def worker(
    check: Annotated[
        bool, typer.Option("--check", help="exit 0 if a running worker is alive (a probe)")
    ] = False,
) -> None:
    """Run a Celery worker (series metadata caches; per-facility task queues)."""
    settings = _settings()
    if check:
        from noctis.worker.liveness import check as check_worker

        alive, reason = check_worker(settings)
        console.print(reason)
        raise typer.Exit(0 if alive else 1)
    from noctis.worker.main import run

    _logging()
    run(settings, concurrency=settings.worker_concurrency)


@app.command()
def operator(
    namespace: Annotated[list[str] | None, typer.Option(help="watch only these namespaces")] = None,
) -> None:
    """Run the Kubernetes operator."""
    from noctis.operator.main import run

    _logging()
    run(_settings(), namespaces=namespace or [])


@facility_app.command("apply")
def facility_apply(
    file: Annotated[Path, typer.Option("-f", "--file", help="Facility YAML (the CR's shape)")],
) -> None:
    """Create or update facilities from a YAML file (one or more documents)."""
    from noctis.core.facilities import FacilityConflict, apply_facility
    from noctis.core.runtime import Runtime
    from noctis.specs.facility import FacilityDocument

    settings = _settings()
    try:
        documents = [d for d in yaml.safe_load_all(file.read_text()) if d]
        facilities = [FacilityDocument.model_validate(d) for d in documents]
    except (OSError, yaml.YAMLError) as exc:
        console.print(f"[red]cannot read {file}:[/red] {exc}")
        raise typer.Exit(2) from exc
    except ValidationError as exc:
        console.print(f"[red]invalid facility spec in {file}:[/red]\n{exc}")
        raise typer.Exit(2) from exc
    runtime = Runtime.open(settings)
    try:
        with runtime.sessions.begin() as session:
            for document in facilities:
                apply_facility(session, document.name, document.spec)
    except FacilityConflict as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        runtime.close()
    for document in facilities:
        console.print(
            f"facility {document.name}: {len(document.spec.application_entities)} AE(s) applied"
        )


@facility_app.command("list")
def facility_list() -> None:
    """Show the registered facilities and their AEs."""
    from noctis.core.facilities import list_facilities
    from noctis.core.runtime import Runtime

    runtime = Runtime.open(_settings())
    try:
        with runtime.sessions() as session:
            table = Table("facility", "enabled", "AE title", "host:port", "CIDRs", "services")
            for facility in list_facilities(session):
                for ae in facility.application_entities or [None]:
                    table.add_row(
                        facility.name,
                        "yes" if facility.enabled else "no",
                        ae.ae_title if ae else "",
                        f"{ae.host}:{ae.port}" if ae and ae.host else "",
                        ", ".join(ae.allowed_cidrs) if ae else "",
                        ", ".join(ae.services) if ae else "",
                    )
            Console().print(table)
    finally:
        runtime.close()


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Argument()],
    role: Annotated[
        str,
        typer.Option(
            help="admin, facility-admin, radiologist, technologist or referring-physician"
        ),
    ] = "radiologist",
    facility: Annotated[
        list[str] | None, typer.Option("--facility", "-F", help="facility the user may see")
    ] = None,
    display_name: Annotated[str, typer.Option(help="full name")] = "",
) -> None:
    """Create a local user; prints the generated password once."""
    from noctis.core.accounts import AccountError, add_user
    from noctis.core.runtime import Runtime

    runtime = Runtime.open(_settings())
    try:
        password = add_user(
            runtime, username, role, facilities=facility or [], display_name=display_name
        )
    except AccountError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        runtime.close()
    console.print(f"user {username} ({role}) created; password: {password}")


@user_app.command("passwd")
def user_passwd(username: Annotated[str, typer.Argument()]) -> None:
    """Give a user a new generated password (printed once) and end their sessions."""
    from noctis.core.accounts import AccountError, reset_password
    from noctis.core.runtime import Runtime

    runtime = Runtime.open(_settings())
    try:
        password = reset_password(runtime, username)
    except AccountError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        runtime.close()
    console.print(f"new password for {username}: {password}")


@app.command()
def echo(
    host: Annotated[str, typer.Argument()] = "127.0.0.1",
    port: Annotated[int, typer.Argument()] = 11112,
    called: Annotated[str, typer.Option(help="called AE title")] = "NOCTIS",
    calling: Annotated[str, typer.Option(help="calling AE title")] = "NOCTISCLI",
) -> None:
    """C-ECHO a DICOM node."""
    from noctis.scp.client import echo as send_echo

    status = send_echo(host, port, called_ae=called, calling_ae=calling)
    console.print(f"C-ECHO {called}@{host}:{port}: status 0x{status:04X}")
    raise typer.Exit(0 if status == 0 else 1)


@app.command()
def upload(
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders")],
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 11112,
    called: Annotated[str, typer.Option(help="called AE title")] = "NOCTIS",
    calling: Annotated[str, typer.Option(help="calling AE title")] = "NOCTISCLI",
) -> None:
    """C-STORE files to a DICOM node, each in its own transfer syntax."""
    from noctis.scp.client import store_files

    files = [p for path in paths for p in ([path] if path.is_file() else sorted(path.rglob("*")))]
    files = [f for f in files if f.is_file()]
    report = store_files(host, port, files, called_ae=called, calling_ae=calling)
    console.print(f"sent {report.succeeded} of {len(files)} files; {report.failed} failed")
    for path, reason in report.failures[:20]:
        console.print(f"  [red]{path}[/red]: {reason}")
    raise typer.Exit(0 if report.failed == 0 else 1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
