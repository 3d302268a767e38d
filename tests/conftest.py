"""Shared test fixtures: run the real ``keysync`` command, write a real config file.

Kept small and generic on purpose: every area's tests use these, and anything
specific to one area belongs in that area's test module.

Hypothesis profiles: ``default-no-deadline`` for local runs; ``ci`` (``pytest
--hypothesis-profile=ci`` or ``HYPOTHESIS_PROFILE=ci``) has no deadline and a
fixed seed, so a slow CI machine never fails on timing and every CI run
explores the same examples.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml
from hypothesis import settings

# No deadline in any profile: a per-example deadline only measures how busy the machine is
# (seen: 389 ms for a 1 ms example under load, failing as "Unreliable test timings").
settings.register_profile("default-no-deadline", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or "default-no-deadline")

# The suite starts well over a thousand Python processes (each ``keysync`` command, and each
# run's forkserver). With PYTHONDONTWRITEBYTECODE set, as on the CI machines, every one of them
# compiled all of keysync again: a fifth of the suite's time. Their bytecode goes to a cache
# outside the source tree instead, so the tree stays as clean as the variable meant to keep it.
# (A folder of this session's own: one at a fixed path in a shared /tmp could hold
# bytecode that someone else put there.)
if os.environ.get("PYTHONDONTWRITEBYTECODE") and "PYTHONPYCACHEPREFIX" not in os.environ:
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="keysync-tests-pycache-")
    atexit.register(shutil.rmtree, os.environ["PYTHONPYCACHEPREFIX"], ignore_errors=True)


class RunKeysync(Protocol):
    def __call__(
        self,
        *args: str,
        cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]: ...


def _base_env() -> dict[str, str]:
    """The current environment minus anything that would point keysync elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")}
    env["PYTHONIOENCODING"] = "utf-8"
    return env


@pytest.fixture
def keysync(tmp_path: Path) -> RunKeysync:
    """Run ``python -m keysync ARGS`` in a subprocess, as a user would; never raises on exit code.

    ``cwd`` defaults to the test's ``tmp_path``; ``env`` entries are added to a clean
    environment (no inherited ``KEYSYNC_*`` variables).
    """

    def run(
        *args: str,
        cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        full_env = _base_env()
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "keysync", *args],
            cwd=cwd or tmp_path,
            env=full_env,
            input=input,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=timeout,
            check=False,
        )

    return run


def _write_config(
    tmp_path: Path, *, filename: str = "keysync-config.yaml", **sections: Any
) -> Path:
    """Write a config file holding exactly ``sections`` (top-level keys); return its path.

    Anything not given keeps keysync's own default, so ``write_config(tmp_path)``
    writes an empty config: every relative path then lands under ``tmp_path``.
    """
    path = tmp_path / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(sections or {}, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def write_config() -> Callable[..., Path]:
    """``write_config(tmp_path, processing={"batch_size": 10}, ...) -> Path`` of the YAML file."""
    return _write_config
