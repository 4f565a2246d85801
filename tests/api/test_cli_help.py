"""Every `ern` command's --help fits an 80-column terminal: no line wider, no word cut off."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from api.cli import app

COLUMNS = 80


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    # Typer's groups (its own copy of click's) have .commands; plain commands do not.
    subs: dict[str, Any] = getattr(command, "commands", None) or {}
    for name, sub in sorted(subs.items()):
        found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def test_the_walk_finds_every_command() -> None:
    names = {" ".join(path) for path in COMMANDS}
    assert {"", "serve", "db upgrade", "synth", "worker", "inbox"} <= names
    assert {"admin create-coordinator", "graph build"} <= names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "ern")
def test_help_fits_80_columns_without_cut_words(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(COLUMNS)})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines, "no help printed"
    assert max(len(line) for line in lines) <= COLUMNS, result.output
    # Rich marks a word it had to cut with an ellipsis.
    assert "…" not in result.output, result.output
