"""`python -m api.cli`: the `ern` command."""

from api.cli import app

app(prog_name="ern")
