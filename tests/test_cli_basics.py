"""The command line shell: version, help with an example on every command, both entry points.

Commands are found by walking the click group, so a new command or subcommand
is covered (and must carry an example) without touching this file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click
import pytest

from keysync import __version__
from keysync.cli import main

if TYPE_CHECKING:
    from conftest import RunKeysync


def _commands(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            yield from _commands(command.commands[name], (*path, name))


COMMANDS = list(_commands(main))


def test_the_walk_finds_the_commands_of_spec() -> None:
    # A guard for the walk itself: SPEC.md's commands are all there.
    found = {" ".join(path) for path in COMMANDS}
    expected = {"generate", "run", "simulate", "config", "config check", "runs", "audit"}
    expected |= {"history", "registry", "registry list", "registry show", "registry approve"}
    expected |= {"registry deprecate", "registry export"}
    assert expected <= found


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "keysync")
def test_every_command_help_has_an_example(keysync: RunKeysync, path: tuple[str, ...]) -> None:
    result = keysync(*path, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("Usage: ")
    assert "Example" in result.stdout
    # The example shows the command it belongs to.
    assert f"keysync {' '.join(path)}".rstrip() in result.stdout


def test_short_help_option(keysync: RunKeysync) -> None:
    assert keysync("-h").stdout == keysync("--help").stdout
    assert keysync("config", "check", "-h").stdout == keysync("config", "check", "--help").stdout


def test_top_level_help_lists_global_options_and_commands(keysync: RunKeysync) -> None:
    result = keysync("--help")
    for option in ("-c, --config", "--log-format", "-q, --quiet", "-v, --verbose", "--version"):
        assert option in result.stdout
    assert "KEYSYNC_CONFIG" in result.stdout
    for name in ("generate", "run", "simulate", "registry", "runs", "audit", "history", "config"):
        assert f"\n  {name} " in result.stdout
    commands = result.stdout.split("Commands:")[1]
    assert "..." not in commands  # click cuts a long first line: each has a short_help


def test_version(keysync: RunKeysync) -> None:
    result = keysync("--version")
    assert result.returncode == 0
    assert result.stdout == f"keysync, version {__version__}\n"


def test_version_needs_no_config(keysync: RunKeysync, tmp_path: Path) -> None:
    # No keysync-config.yaml in the folder: --version and --help still work.
    assert not (tmp_path / "keysync-config.yaml").exists()
    assert keysync("--version", cwd=tmp_path).returncode == 0
    assert keysync("run", "--help", cwd=tmp_path).returncode == 0


def test_python_dash_m_keysync(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "keysync", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: ")


def test_installed_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("keysync")
    if not script.exists():
        found = shutil.which("keysync")
        if found is None:
            pytest.skip("the keysync console script is not installed here")
        script = Path(found)
    result = subprocess.run(
        [str(script), "--version"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"keysync, version {__version__}\n"


def _bytes_run(folder: bytes, *args: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable.encode(), b"-m", b"keysync", *args], cwd=folder, capture_output=True
    )


def test_bytes_that_are_not_utf8_in_an_argument_or_a_folder_name_are_one_line(
    tmp_path: Path,
) -> None:
    """Seen (log hunt): `registry approve $'CUST\\xff-1'` and `run --systems $'A,B\\xff'`
    ended in tracebacks (exit 1); so did a run in a folder named with such a byte, after
    reading everything, or (with -v, the logger) after its commit."""
    folder = bytes(tmp_path) + b"/bad\xffdir"
    Path(folder.decode("utf-8", "surrogateescape")).mkdir()
    (Path(folder.decode("utf-8", "surrogateescape")) / "keysync-config.yaml").write_text("{}\n")
    refused = _bytes_run(folder, b"registry", b"approve", b"CUST\xff-1")
    assert refused.returncode == 2
    assert refused.stderr == (
        b"keysync: error: argument 3 ('CUST\\xff-1') is not UTF-8 text; keysync takes keys, "
        b"names and paths as UTF-8 (check the terminal's or the script's encoding)\n"
    )
    refused = _bytes_run(folder, b"-v", b"run")
    assert refused.returncode == 2
    assert refused.stderr == (
        b"keysync: error: keysync-config.yaml: sources.A.path: '"
        + folder.replace(b"\xff", b"\\xff")
        + b"/input/A.csv' is not UTF-8 text (a folder name holds other bytes); keysync writes "
        b"its paths into reports and state: rename the folder, or give a path that is\n"
    )


def test_unknown_command_is_a_usage_error(keysync: RunKeysync) -> None:
    result = keysync("reconcile")
    assert result.returncode == 2
    assert "No such command 'reconcile'" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_global_option_value_is_a_usage_error(keysync: RunKeysync) -> None:
    result = keysync("--log-format", "xml", "config", "check")
    assert result.returncode == 2
    assert "Invalid value for '--log-format'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_global_option_after_the_command_says_where_it_goes(keysync: RunKeysync) -> None:
    """Seen (journeys hunt): `keysync run -q` said only "No such option '-q'"."""
    quiet = keysync("run", "-q")
    assert (quiet.returncode, quiet.stderr) == (
        2,
        "keysync: error: run: -q is an option of keysync itself: put it before the command "
        "(keysync -q run ...)\n",
    )
    formatted = keysync("registry", "list", "--log-format", "json")
    assert formatted.returncode == 2
    assert "(keysync --log-format console|json registry list ...)" in formatted.stderr
    config = keysync("runs", "-c", "other.yaml")
    assert "(keysync -c PATH runs ...)" in config.stderr  # as --help and SPEC.md write it
    other = keysync("run", "--bogus")
    assert (
        other.stderr == "keysync: error: run: No such option '--bogus' (see `keysync run --help`)\n"
    )


def test_a_bad_config_path_from_the_environment_is_blamed_on_it(
    keysync: RunKeysync, tmp_path: Path
) -> None:
    """Seen: KEYSYNC_CONFIG=<a folder> said "Invalid value for '-c' / '--config'", an option
    nobody had given."""
    from_env = keysync("runs", env={"KEYSYNC_CONFIG": str(tmp_path)})
    assert from_env.returncode == 2
    assert from_env.stderr == (
        f"keysync: error: Invalid value for KEYSYNC_CONFIG: File '{tmp_path}' is a directory "
        "(see `keysync --help`)\n"
    )
    given = keysync("-c", str(tmp_path), "runs", env={"KEYSYNC_CONFIG": str(tmp_path)})
    assert given.stderr.startswith("keysync: error: Invalid value for '-c' / '--config': ")
