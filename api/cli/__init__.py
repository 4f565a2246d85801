"""The `ern` command, assembled from one module per command group (serve.py, db.py, ...)."""

from __future__ import annotations

import typer

from api.cli.admin import admin_app
from api.cli.db import db_app
from api.cli.graph import graph_app
from api.cli.inbox import inbox
from api.cli.purge import purge
from api.cli.serve import serve
from api.cli.synth import synth
from api.cli.worker import worker

app = typer.Typer(
    help="ern: routing for community emergency response networks", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.command("serve")(serve)
# Sub-commands owned by each domain, mounted here so `ern --help` lists them all.
app.add_typer(admin_app, name="admin")
app.add_typer(graph_app, name="graph")
app.command("synth")(synth)
app.command("worker")(worker)
app.command("inbox")(inbox)
app.command("purge")(purge)

__all__ = ["app"]
