"""`ern db`: migrations and the embedded PostgreSQL cluster."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from api.settings import Settings

db_app = typer.Typer(help="The database: migrations and the embedded cluster", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all migrations (starts the embedded cluster if that is the database)."""
    from api import database

    url = database.resolve_database_url(Settings())
    database.upgrade(url)
    typer.echo("schema is up to date")


@db_app.command("start")
def db_start() -> None:
    """Start the embedded cluster and print its URL."""
    from api.embedded import EmbeddedCluster

    typer.echo(EmbeddedCluster(Settings().var_dir).start())


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded cluster."""
    from api.embedded import EmbeddedCluster

    settings = Settings()
    if not settings.embedded:
        typer.echo("ERN_DATABASE_URL is set: ern does not manage that server")
        raise typer.Exit(0)
    stopped = EmbeddedCluster(settings.var_dir).stop()
    typer.echo("embedded cluster stopped" if stopped else "embedded cluster was not running")


@db_app.command("url")
def db_url() -> None:
    """Print the database's URL for psql, pg_dump and pg_restore (password left out)."""
    from api import database
    from api.cli.backup import libpq_url

    typer.echo(libpq_url(database.resolve_database_url(Settings()))[0])


@db_app.command("backup")
def db_backup(
    file: Annotated[Path, typer.Argument(help="where the dump goes (pg_dump's custom format)")],
) -> None:
    """Dump the whole database (schema, data, the PostGIS extension) with pg_dump."""
    from api import database
    from api.cli.backup import BackupError, backup

    url = database.resolve_database_url(Settings())
    try:
        command = backup(url, file)
    except BackupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"ran: {shlex.join(command)}")
    typer.echo(
        f"wrote {file} ({file.stat().st_size} bytes); it holds no ERN_SECRET_KEY and no "
        "compiled graphs: keep the key separately"
    )


@db_app.command("restore")
def db_restore(
    file: Annotated[Path, typer.Argument(help="a dump made by `ern db backup` (or pg_dump -Fc)")],
    into: Annotated[
        str | None,
        typer.Option("--into", help="URL of an existing empty database; default: ern's own"),
    ] = None,
) -> None:
    """Restore a dump into an empty database in one transaction, then apply newer migrations."""
    from sqlalchemy.engine import make_url

    from api import database
    from api.cli.backup import BackupError, restore

    url = into or database.resolve_database_url(Settings())
    try:
        command = restore(url, file)
    except BackupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"ran: {shlex.join(command)}")
    # A plain postgresql:// URL (as psql takes) would make SQLAlchemy look for psycopg2.
    database.upgrade(make_url(url).set(drivername="postgresql+psycopg").render_as_string(False))
    typer.echo(
        "restored, and the schema is up to date; with a service role, run the grants of "
        "docs/operations.md's 'Database roles' again as the owner"
    )
