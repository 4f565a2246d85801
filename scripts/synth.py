#!/usr/bin/env python
"""Synthetic members on a real street graph: the same command as `ern synth`."""

from __future__ import annotations

import typer

from api.cli.synth import synth

if __name__ == "__main__":
    typer.run(synth)
