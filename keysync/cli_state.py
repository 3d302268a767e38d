"""Commands over the state store: registry, runs, audit, history (issue 4)."""

from __future__ import annotations

import click

STATE_COMMANDS: list[click.Command] = []
