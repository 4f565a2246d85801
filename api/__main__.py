"""`python -m api`: the `ern` command (how `ern serve` starts its worker process)."""

from api.cli import app

app(prog_name="ern")
