"""`ern db`: migrations and the embedded PostgreSQL cluster."""

from __future__ import annotations

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
