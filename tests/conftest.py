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
import errno
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
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


class FullDisk:
    """A small tmpfs mounted on a folder for one test: ``fill()`` leaves no room in it,
    ``make_room()`` gives the room back. For the writes a symlink to /dev/full cannot
    stand in for: a lock file is read as well as written (/dev/full reads zeros without
    end), a checkpoint folder is named after a run id not known in advance."""

    def __init__(self, folder: Path, size_kb: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("needs `mount -t tmpfs` (root)")
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        if mounted.returncode != 0:  # a container without CAP_SYS_ADMIN, most CI machines
            pytest.skip(f"needs `mount -t tmpfs`: {mounted.stderr.strip()}")
        self.folder = folder
        self.filler = folder / ".filler"

    def fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while os.write(fd, b"\0" * 65536):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)

    def make_room(self) -> None:
        self.filler.unlink()

    def make_read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.folder)], check=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.folder)], capture_output=True, check=False)


@pytest.fixture
def full_disk() -> Iterator[Callable[[Path, int], FullDisk]]:
    """``full_disk(folder, size_kb)``: a :class:`FullDisk` there, unmounted after the test."""
    mounted: list[FullDisk] = []

    def make(folder: Path, size_kb: int) -> FullDisk:
        mounted.append(FullDisk(folder, size_kb))
        return mounted[-1]

    yield make
    for disk in reversed(mounted):
        disk.unmount()
