"""Shared fixtures of the benchmarks: mock inputs made once per session, by size.

Benchmarks are not part of the default test run (``testpaths = tests``); run them
with ``pip install -e '.[bench]'`` and ``pytest bench/ --benchmark-enable``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

SYSTEMS = "ABCDE"


def clean_env() -> dict[str, str]:
    """The environment without KEYSYNC_* variables (no test hooks, no other config)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")}


def write_config(home: Path, inputs: Path, **processing: object) -> Path:
    """A config in ``home`` reading ``inputs/A.csv``..``E.csv``, with its own state."""
    home.mkdir(parents=True, exist_ok=True)
    config = {
        "simulation": {"seed": 42},
        "sources": {s: {"type": "csv", "path": str(inputs / f"{s}.csv")} for s in SYSTEMS},
        "paths": {"output": "./output", "data": "./data", "checkpoints": "./checkpoints"},
    }
    if processing:
        config["processing"] = processing
    path = home / "keysync-config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def mock_inputs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Path]:
    """``mock_inputs(keys)``: a folder with A.csv..E.csv of ``keys`` keys each (seed 42)."""
    made: dict[int, Path] = {}

    def make(keys: int) -> Path:
        if keys not in made:
            home = tmp_path_factory.mktemp(f"inputs-{keys}")
            config = write_config(home, home / "input")
            command = [sys.executable, "-m", "keysync", "-q", "-c", str(config), "generate"]
            subprocess.run(
                [*command, "--keys", str(keys)],
                check=True,
                env=clean_env(),
            )
            made[keys] = home / "input"
        return made[keys]

    return make
