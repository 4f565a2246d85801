"""The `ern` command: serve, database, admin, graphs, synthetic data and workers."""

from __future__ import annotations

import logging

import typer

from api.admin_cli import admin_app
from api.graph_cli import graph_app
from api.settings import Settings
from api.synth_cli import synth
from api.worker_cli import worker

app = typer.Typer(
    help="ern: routing for community emergency response networks", no_args_is_help=True
)
db_app = typer.Typer(help="The database: migrations and the embedded cluster", no_args_is_help=True)
app.add_typer(db_app, name="db")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="interface to listen on"),
    port: int = typer.Option(8000, help="TCP port"),
) -> None:
    """Run the HTTP service (embedded PostGIS unless ERN_DATABASE_URL is set)."""
    import uvicorn

    from api.main import create_app

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings()
    application = create_app(settings)
    typer.echo(f"ern serving on http://{host}:{port}  (API docs: http://{host}:{port}/docs)")
    uvicorn.run(application, host=host, port=port, log_level="info")


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


# Sub-commands owned by each domain, mounted here so `ern --help` lists them all.
app.add_typer(admin_app, name="admin")
app.add_typer(graph_app, name="graph")
app.command("synth")(synth)
app.command("worker")(worker)
