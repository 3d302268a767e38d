"""The ``keysync`` command line: parse options, call the library, print. No logic here."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import signal
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from itertools import chain, islice
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from keysync import __version__
from keysync.config import (
    DEFAULT_CONFIG_PATH,
    MAX_DAYS_OF_HISTORY,
    Config,
    load_config,
    where_set,
)
from keysync.errors import (
    EXIT_CANNOT_RUN,
    EXIT_INTERRUPTED,
    EXIT_PIPE_CLOSED,
    EXIT_USAGE,
    STOPS,
    ConfigError,
    KeysyncError,
    RunError,
    bytes_shown,
    file_in_the_way,
    process,
    raise_terminated,
    stop_name,
    stops_ignored,
)
from keysync.testhooks import pause_for_tests

F = TypeVar("F", bound=Callable[..., Any])


class AppContext:
    """What the global options decided, handed to every command."""

    def __init__(self, config_path: str, log_format: str, quiet: bool, verbose: int) -> None:
        self.config_path = config_path
        self.log_format = log_format
        self.quiet = quiet
        self.verbose = verbose
        self._config: Config | None = None
        self.command_path = "keysync"  # the command that reads the config: what an error names

    @property
    def config(self) -> Config:
        if self._config is None:
            context = click.get_current_context(silent=True)
            if context is not None:
                self.command_path = context.command_path
            self._config = load_config(self.config_path)
        return self._config

    def state_database(self) -> Path | None:
        """``paths.data/keysync.db`` once the config is read (an error names it), else None."""
        from keysync.state import DB_NAME

        return None if self._config is None else self._config.data_dir / DB_NAME

    def shows_progress(self) -> bool:
        """A progress line on stderr: a terminal, no -q, and no JSON stderr to keep clean."""
        return not self.quiet and self.log_format != "json" and sys.stderr.isatty()

    @contextlib.contextmanager
    def failures_logged(self, *, creating_nothing: bool = False) -> Iterator[None]:
        """Checks made before logging is set up (the folders must be writable first):
        a refusal still reaches the log file a collector reads, as ``command.failed``,
        when the log file can be opened (the failure may be its folder). With
        ``creating_nothing`` only when the log file is there already: a run refused
        for a wrong path must leave no folder or file behind."""
        try:
            yield
        except KeysyncError:
            if not creating_nothing or os.path.isfile(self.config.log_file):
                with contextlib.suppress(KeysyncError, OSError):
                    self.setup_logging()
            raise

    def setup_logging(self) -> None:
        from keysync.logs import setup_logging

        config = self.config
        _check_locations(self, ("logging.file",))
        try:
            setup_logging(
                level=config.logging.level,
                log_file=config.log_file,
                stderr_format=self.log_format,
                quiet=self.quiet,
                verbose=self.verbose,
            )
        except KeysyncError as exc:  # a permission, a read-only disk: named as config errors are
            if not str(exc).startswith("logging.file: "):
                raise
            where = where_set(self.config_path, "logging.file")
            raise type(exc)(f"{where}: {exc}", exc.exit_code) from None


pass_app = click.make_pass_decorator(AppContext)
scenario_option = click.option(
    "--scenario",
    type=click.Choice(["normal", "drift", "failure", "recovery"]),
    help="Scenario (default: simulation.scenario).",
)


def days_option(what: str) -> Callable[[F], F]:
    """``--days``, shared by ``generate`` and ``simulate``: one bound, said the same way."""
    return click.option(
        "--days",
        type=click.IntRange(min=1, max=MAX_DAYS_OF_HISTORY),
        help=f"{what}; at most {MAX_DAYS_OF_HISTORY}.",
    )


class _WholeWrites(io.RawIOBase):
    """A file descriptor that takes each write whole, or raises.

    ``FileIO`` does one ``write(2)``; to a pipe whose reader goes away mid-write
    (``keysync audit | head``) that returns the part the pipe took, and
    ``BufferedWriter`` hands the short count up to a ``TextIOWrapper`` that ignores
    it: the rest of a table printed in one write was dropped without a word, and
    the command exited 0. Written whole, the next ``write(2)`` raises
    ``BrokenPipeError`` (exit 141).
    """

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:  # click asks, to keep colours for a terminal
        return os.isatty(self._fd)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                done += os.write(self._fd, view[done:])
        except BrokenPipeError:
            raise
        except OSError as exc:  # `keysync runs > file` on a full disk: the error names no file
            raise StdoutFailed(exc.errno, exc.strerror, _where_stdout_goes(self._fd)) from None
        return done


class StdoutFailed(OSError):
    """A write to stdout failed (a full disk under a redirect); its ``filename`` says where."""


def _where_stdout_goes(fd: int) -> str:
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc (macOS)
        return "standard output"
    return f"standard output ({target})" if target.startswith("/") else "standard output"


def _stdout_written_whole() -> None:
    """Put ``_WholeWrites`` under ``sys.stdout`` when it is the process's own stdout."""
    stdout = sys.stdout
    if not isinstance(stdout, io.TextIOWrapper):
        return
    if isinstance(getattr(stdout.buffer, "raw", None), _WholeWrites):
        return  # already (keysync called again in one process)
    try:
        fd = stdout.fileno()
    except (OSError, ValueError):  # captured (a test runner): not a file descriptor
        return
    stdout.flush()
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(_WholeWrites(fd)),
        encoding=stdout.encoding,
        errors=stdout.errors,
        line_buffering=stdout.line_buffering,
    )


class KeysyncGroup(click.Group):
    """Turns foreseeable errors into one line on stderr and the exit code of SPEC.md."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        if parent is None:
            _refuse_undecodable(args)
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:  # a global option: --log-format xml
            _usage_error(exc)

    def invoke(self, ctx: click.Context) -> Any:
        _stdout_written_whole()
        # SIGTERM is taken as Ctrl-C (errors.Terminated): one line and 130, not a silent 143.
        # In the keysync process, Ctrl-C becomes Python's KeyboardInterrupt again only now:
        # __main__ held both till the command line was parsed (click's "Aborted!" is exit 1,
        # "discrepancies"). A signal ignored by whoever started keysync (`cmd &` in a
        # script) stays ignored. Put back after: called in a longer-lived process (a test
        # runner), keysync must not keep its handlers. (The keysync process itself ends with
        # the command: see run_as_command.)
        if threading.current_thread() is not threading.main_thread():  # signal() would raise
            return self._invoke_saying_errors(ctx)
        # The error line's module, while a Ctrl-C is still held: an import a KeyboardInterrupt
        # cuts short is left half made, and saying "interrupted" then failed (a NameError).
        from keysync import logs  # noqa: F401

        handlers: dict[int, Any] = {signal.SIGTERM: raise_terminated}
        if process.ends_with_command:
            handlers[signal.SIGINT] = signal.default_int_handler
        previous: dict[int, Any] = {}

        def take_signals() -> None:  # in the try of the errors: a Ctrl-C at once is said too
            for sig, handler in handlers.items():
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    previous[sig] = signal.signal(sig, handler)

        try:
            return self._invoke_saying_errors(ctx, take_signals)
        finally:
            if process.ends_with_command:
                _stops_ignored_till_the_exit()
            else:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    def _invoke_saying_errors(
        self, ctx: click.Context, take_signals: Callable[[], None] = lambda: None
    ) -> Any:
        try:
            take_signals()
            try:
                result = super().invoke(ctx)
            except click.exceptions.Exit:  # (`ctx.exit(1)`: discrepancies found)
                sys.stdout.flush()
                raise
            # What is still buffered, written now: a full disk under a redirected stdout is
            # said in one line here, not as a traceback and exit 120 when Python exits.
            sys.stdout.flush()
            return result
        except click.exceptions.NoArgsIsHelpError:
            raise  # `keysync registry`: its help, as click shows it
        except click.UsageError as exc:
            _usage_error(exc)
        except KeysyncError as exc:
            _failed(ctx, f"keysync: error: {exc}", exc.exit_code)
        except BrokenPipeError:
            # `keysync audit | head`: the reader had enough. Quietly, and with what a shell
            # shows for a command stopped by SIGPIPE (141), not click's 1 ("discrepancies").
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_PIPE_CLOSED)
        except OSError as exc:
            # A full disk, a permission, a folder in the way of a file: foreseeable, and
            # the run has logged its traceback (run.failed) in the log file already.
            if isinstance(exc, StdoutFailed):  # what is left to flush at the exit: nowhere
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                _failed(ctx, f"keysync: error: {_stdout_failed_line(ctx, exc)}", EXIT_CANNOT_RUN)
            _failed(ctx, f"keysync: error: {_os_error_line(exc)}", EXIT_CANNOT_RUN)
        except sqlite3.DatabaseError as exc:
            # The same for the state database: a read-only file, a full disk, a lock, damage.
            from keysync.state import state_problem

            app = ctx.find_object(AppContext)
            problem = state_problem(exc, app.state_database() if app is not None else None)
            if problem is None:
                raise  # an SQL error is a bug: its traceback helps more than a guess
            _failed(ctx, f"keysync: error: {problem}", EXIT_CANNOT_RUN)
        except KeyboardInterrupt:
            # Outside a run (which stops at a checkpoint itself): click would print
            # "Aborted!" and exit 1, the code for "discrepancies found". Said of reading
            # commands too (`runs`, `audit`), which "every file written" puzzled.
            _failed(
                ctx,
                "keysync: error: interrupted; nothing is left half-written: run the command again",
                EXIT_INTERRUPTED,
            )


def run_as_command() -> None:
    """The ``keysync`` process (``keysync.__main__.entry``): the command, then the exit.

    A command called from a longer-lived process puts back the signal handlers it set;
    here nothing comes after the command, and a Ctrl-C or SIGTERM that came while Python
    shuts down (a run just committed, its summary said) would end a completed command by
    the signal, 130 or 143 and no word. So they are ignored from the end of the command on.
    """
    process.ends_with_command = True  # (__main__ holds Ctrl-C and SIGTERM till invoke)
    try:
        main(prog_name="keysync")
    finally:
        _stops_ignored_till_the_exit()  # (a command invoked has done so already)
        _forget_a_caught_interrupt()
        pause_for_tests("exiting")


def _forget_a_caught_interrupt() -> None:
    """CPython remembers a KeyboardInterrupt that left an ``exec``/``eval`` of a string
    (a dataclass or a namedtuple being made while a module imports), even one keysync
    then caught, and ``python -m keysync`` ends killed by SIGINT (-2) instead of with its
    exit code (bpo-41602's flag is never reset). An exec that completes resets it."""
    exec("")


def _stops_ignored_till_the_exit() -> None:
    for sig in STOPS:
        signal.signal(sig, signal.SIG_IGN)


def _failed(ctx: click.Context, line: str, exit_code: int) -> NoReturn:
    """The command's one error line (an event too: ``logs.tell_user``), then its exit code."""
    from keysync.logs import last_run_id, tell_user

    app = ctx.find_object(AppContext)
    command = ctx.command_path if app is None or ctx.parent else app.command_path
    run_id = last_run_id() if command == "keysync run" else ""  # the run that failed
    with stops_ignored():  # a second Ctrl-C must not cut the line short with a traceback
        tell_user(
            line,
            exit_code=exit_code,
            stderr_format=app.log_format if app else "",
            run_id=run_id,
            command=command,
        )
    ctx.exit(exit_code)


def _stdout_failed_line(ctx: click.Context, exc: StdoutFailed) -> str:
    """What a command whose stdout filled the disk says: a run has printed its summary only
    once it was done, and running it again would be another run."""
    app = ctx.find_object(AppContext)
    command = ctx.command_path if app is None or ctx.parent else app.command_path
    done = (
        "; the run itself is done (`keysync runs` shows it)"
        if command == "keysync run"
        else ", then run the command again"
    )
    return (
        f"cannot write {exc.filename}: {(exc.strerror or str(exc)).lower()}; what it printed "
        f"is cut short: make room there{done}"
    )


def _os_error_line(exc: OSError) -> str:
    """``/out/duplicates.csv: is a directory; ...``: the file, the reason, what to do."""
    where = exc.filename2 if exc.filename2 is not None else exc.filename
    reason = (exc.strerror or str(exc)).lower()
    if exc.errno == errno.EMFILE:  # the process's limit, not a file's: the file is no clue
        import resource

        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return f"{reason}; raise the limit of open files (ulimit -n, now {limit}) and run again"
    place = f"{os.fsdecode(where)}: " if where is not None else ""
    return (
        f"{place}{reason}; make room, fix the permissions or move what is in the way, "
        "then run again"
    )


def _from_environment(param: click.Parameter | None) -> bool:
    """Whether an option's value came from its environment variable (``KEYSYNC_CONFIG``):
    set there, and none of its flags on the command line."""
    if param is None or not isinstance(param.envvar, str) or param.envvar not in os.environ:
        return False
    given = sys.argv[1:]
    return not any(
        arg == flag or arg.startswith(flag + "=") for flag in param.opts for arg in given
    )


def _refuse_undecodable(args: list[str]) -> None:
    """Bytes that are not UTF-8 on the command line reach Python as lone surrogates, which
    SQLite, the reports and the logs cannot take: a traceback deep in a command before."""
    for number, arg in enumerate(args, start=1):
        if (shown := bytes_shown(arg)) != arg:
            click.echo(
                f"keysync: error: argument {number} ('{shown}') is not UTF-8 text; keysync "
                "takes keys, names and paths as UTF-8 (check the terminal's or the script's "
                "encoding)",
                err=True,
            )
            sys.exit(EXIT_USAGE)


def _usage_error(exc: click.UsageError) -> NoReturn:
    """One line instead of click's Usage / Try / Error block (SPEC.md: one line, exit 2)."""
    names = []
    context = exc.ctx
    while context is not None and context.parent is not None:
        names.append(context.info_name or "")
        context = context.parent
    command = " ".join(["keysync", *reversed(names)])
    message = exc.format_message().rstrip(".")
    if isinstance(exc, click.BadParameter) and _from_environment(exc.param):
        # The value came from the environment, not from the option the message names.
        assert exc.param is not None and isinstance(exc.param.envvar, str)
        message = message.replace(exc.param.get_error_hint(exc.ctx), exc.param.envvar, 1)
    where = f"{command.removeprefix('keysync ')}: " if names else ""
    line = f"keysync: error: {where}{message} (see `{command} --help`)"
    if names and isinstance(exc, click.NoSuchOption) and exc.option_name in _GLOBAL_OPTIONS:
        # `keysync run -q`: an option of keysync itself, which click takes only before.
        shown = _GLOBAL_OPTIONS[exc.option_name]
        line = (
            f"keysync: error: {where}{exc.option_name} is an option of keysync itself: put it "
            f"before the command (keysync {shown} {' '.join(reversed(names))} ...)"
        )
    if exc.ctx is not None:
        _failed(exc.ctx, line, EXIT_USAGE)
    click.echo(line, err=True)  # a global option: before any command or config
    sys.exit(EXIT_USAGE)


@contextlib.contextmanager
def _lock_if_inputs(app: AppContext, out: str | None) -> Iterator[None]:
    """``generate`` into the source paths holds the run lock, as ``run --keys`` does: a run
    reading those files must not see them replaced under it (another ``--out`` is free)."""
    if (
        out is not None
        and Path(out).resolve() != app.config.source_path(app.config.authority).parent.resolve()
    ):
        yield
        return
    from keysync.lock import RunLock

    with RunLock.acquire(app.config.data_dir, "", purpose="keysync generate"):
        yield


def fail(message: str, exit_code: int = EXIT_USAGE) -> None:
    """Stop the command with one line on stderr."""
    raise KeysyncError(message, exit_code)


# Every setting that names a place keysync writes, and what it must name there.
_LOCATIONS = ("paths.output", "paths.data", "paths.checkpoints", "logging.file")


def _location(config: Config, setting: str) -> Path:
    return {
        "paths.output": config.output_dir,
        "paths.data": config.data_dir,
        "paths.checkpoints": config.checkpoint_dir,
        "logging.file": config.log_file,
    }[setting]


def _check_locations(app: AppContext, settings: tuple[str, ...] = _LOCATIONS) -> None:
    """Refuse a path setting that names the wrong kind of thing, creating nothing.

    ``config check`` and ``run`` ask the same, so what one calls valid the other takes
    (a log file that was a folder passed the check, then stopped the run); and ``run``
    asks it of every setting before it makes any folder, so a refused run leaves no
    ``data/`` or log file behind. Only the config can be at fault here (exit 2).
    """
    for setting in settings:
        path = _location(app.config, setting)
        is_file = setting == "logging.file"
        # os.path asks without raising (a folder that cannot be searched answers False).
        in_the_way = file_in_the_way(path.parent)
        if is_file and os.path.isdir(path):
            reason = "it is a folder, not a file"
        elif not is_file and os.path.exists(path) and not os.path.isdir(path):
            reason = "it is a file, not a folder"
        elif in_the_way is not None:
            reason = f"{in_the_way} is a file, not a folder"
        else:
            continue
        raise _location_error(app, setting, path, reason)


def _make_folders(app: AppContext, settings: tuple[str, ...]) -> None:
    """Make each ``paths.<setting>`` folder and check that keysync can write it, before
    any work (after :func:`_check_locations`, so the setting names a folder).

    Otherwise a run would read every source and only then fail on the first report
    (a traceback, exit 1); the setting is named so the user knows what to fix.
    """
    for setting in settings:
        folder = _location(app.config, setting)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # A file made and dropped: os.access() says nothing of a read-only mount.
            tempfile.TemporaryFile(dir=folder).close()
        except (FileExistsError, NotADirectoryError):  # made since it was checked
            raise _location_error(app, setting, folder, "a part of the path is a file") from None
        except OSError as exc:  # a permission, a read-only file system: the machine (exit 3)
            reason = (exc.strerror or str(exc)).lower()
            raise _location_error(app, setting, folder, reason, EXIT_CANNOT_RUN) from None


def _location_error(
    app: AppContext, setting: str, path: Path, reason: str, fault: int = EXIT_USAGE
) -> KeysyncError:
    what = "the log file" if setting == "logging.file" else "a folder"
    fix = "move what is in the way" if fault == EXIT_USAGE else "the folder"
    return KeysyncError(
        f"{where_set(app.config_path, setting)}: {setting}: cannot use {path} as {what}: {reason}; "
        f"fix {setting} or {fix}",
        fault,
    )


def _split_systems(systems: str | None) -> list[str] | None:
    if systems is None:
        return None
    names = [s.strip() for s in systems.split(",") if s.strip()]
    if not names:
        fail(f"--systems: no system named in {systems!r}; give names such as A,C")
    return names


def _discrepancy_kinds(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[str, ...]:
    """``--fail-on missing-in-a,rejected``: the kinds, in the summary table's order."""
    from keysync.comparison import DISCREPANCY_KINDS

    if value is None:
        return ()
    given = {name.strip().lower() for name in value.split(",") if name.strip()}
    unknown = sorted(given - DISCREPANCY_KINDS.keys())
    if unknown or not given:
        raise click.BadParameter(
            f"{'unknown kind ' + repr(unknown[0]) if unknown else 'no kind given'}; "
            f"choose from {', '.join(DISCREPANCY_KINDS)}"
        )
    return tuple(kind for kind in DISCREPANCY_KINDS if kind in given)


def _out_folder(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """``generate --out ""`` named no folder: it wrote into the configured inputs, without
    the run lock that writing there takes."""
    if value == "":
        raise click.BadParameter(
            "an empty folder name; give a folder, or leave --out off to write at the "
            "configured source paths"
        )
    return value


def _check_resume_options(
    app: AppContext,
    *,
    dry_run: bool,
    auto_approve: bool,
    mode: str | None,
    systems: list[str] | None,
) -> None:
    """Refuse ``--resume`` with options that the interrupted run was not started with.

    A resumed run continues exactly as it started (its mode, systems, dry run,
    auto-approve): ``--resume --dry-run`` on an interrupted real run would
    otherwise change the registry although the user asked for a dry run. With
    nothing to resume, the options apply to the normal run as usual (``--keys``, which
    would rewrite the inputs, is refused before this, whatever there is to resume).
    """
    from keysync import checkpoint
    from keysync.runner import select_systems
    from keysync.state import DB_NAME, SUCCESSFUL, StateStore

    config = app.config
    folders = checkpoint.interrupted_runs(config.checkpoint_dir)
    if not folders:
        return
    try:
        header = checkpoint.read_header(folders[0])
        store = StateStore.open(config.data_dir / DB_NAME, create=False)
    except KeysyncError:
        return  # the run itself says what is wrong with it (or that nothing is left)
    with store:
        record = store.run(header.run_id)
        superseded = record is not None and store.committed_after(record.seq)
    if record is None or record.outcome in SUCCESSFUL or superseded:
        # Not resumable: the run starts afresh with these options. (A committed run that
        # is the last of all is only finished, its reports put in place; options that
        # would shape a new run have nothing to act on then, and the README says so.)
        return
    started = header.flags
    conflicts = []
    if dry_run and not started.get("dry_run", False):
        conflicts.append("--dry-run")
    if auto_approve and not started.get("auto_approve", False):
        conflicts.append("--auto-approve")
    if mode is not None and mode != header.mode:
        conflicts.append(f"--mode {mode}")
    if systems is not None and select_systems(config, systems) != list(header.systems):
        conflicts.append(f"--systems {','.join(systems)}")
    if conflicts:
        as_started = ", ".join(
            [f"mode {header.mode}", f"systems {','.join(header.systems)}"]
            + [flag.replace("_", "-") for flag, on in sorted(started.items()) if on]
        )
        fail(
            f"--resume continues run {header.run_id} as it was started ({as_started}), "
            f"so {' and '.join(conflicts)} would be ignored: drop "
            f"{'it' if len(conflicts) == 1 else 'them'}, or run without --resume to start "
            "a new run"
        )


@click.group(cls=KeysyncGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_path",
    default=DEFAULT_CONFIG_PATH,
    envvar="KEYSYNC_CONFIG",
    show_default=True,
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="Configuration file (env KEYSYNC_CONFIG).",
)
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default="console",
    show_default=True,
    help="Format of the log lines on stderr (the log file is always JSON Lines).",
)
@click.option(
    "-q", "--quiet", is_flag=True, help="Only warnings and errors: no progress bar, no summary."
)
@click.option("-v", "--verbose", count=True, help="Debug detail on stderr and in the log file.")
@click.version_option(__version__, prog_name="keysync")
@click.pass_context
def main(ctx: click.Context, config_path: str, log_format: str, quiet: bool, verbose: int) -> None:
    """Reconcile business keys across systems: A is the authority, B..E its peers.

    \b
    Example:
      keysync generate            # mock A.csv..E.csv into ./input
      keysync run                 # reconcile, write ./output, update ./data/keysync.db
      keysync registry list --status Proposed
    """
    ctx.obj = AppContext(config_path, log_format, quiet, verbose)


# keysync's own options, each as it is written before a command (`-c PATH`, `-q`).
def _shown_with_value(param: click.Parameter) -> str:
    """What ``keysync -c PATH`` or ``--log-format console|json`` takes, as --help shows it."""
    if isinstance(param.type, click.Choice):
        return "|".join(map(str, param.type.choices))
    return param.metavar or (param.name or "value").upper()


_GLOBAL_OPTIONS = {
    name: name
    if isinstance(param, click.Option) and (param.is_flag or param.count)
    else f"{name} {_shown_with_value(param)}"
    for param in main.params
    for name in param.opts
}


@main.command()
@click.option("--keys", type=click.IntRange(min=1), help="Keys per system (default: config).")
@click.option("--seed", type=int, help="Random seed (default: simulation.seed).")
@scenario_option
@days_option("Days of history: with D > 1, also one snapshot a day under history/ (default 1)")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    callback=_out_folder,
    help="Output folder (default: the folder of source A's path).",
)
@pass_app
def generate(
    app: AppContext,
    keys: int | None,
    seed: int | None,
    scenario: str | None,
    days: int | None,
    out: str | None,
) -> None:
    """Write mock A.csv..E.csv and manifest.json (the ground truth).

    \b
    Example:
      keysync generate --keys 10000 --seed 7 --scenario drift --days 10 --out ./input
    """
    from keysync.mockdata import generate as generate_mock_data
    from keysync.mockdata.generator import check_generate, check_targets

    with app.failures_logged(creating_nothing=True):  # a refusal makes no folder or file
        check_generate(app.config, keys=keys, seed=seed, scenario=scenario, days=days)
        check_targets(app.config, None if out is None else Path(out), days)
    app.setup_logging()
    # SIGTERM (systemd, docker stop, kill) stops it as Ctrl-C does (KeysyncGroup): pending
    # files removed, the previous inputs left whole, one line and exit 130.
    with _lock_if_inputs(app, out):
        try:
            result = generate_mock_data(
                app.config,
                keys=keys,
                seed=seed,
                scenario=scenario,
                days=days,
                out=None if out is None else Path(out),
            )
        except KeyboardInterrupt as stop:  # (one held while the files went into place is not)
            raise KeysyncError(
                f"{stop_name(stop)} stopped `keysync generate` before it replaced any file: "
                "the previous inputs and their manifest are as they were; run it again",
                EXIT_INTERRUPTED,
            ) from None
    if not app.quiet:
        click.echo(result.describe())


@main.command()
@click.option(
    "--mode",
    type=click.Choice(["full", "incremental"]),
    help="full: read everything; incremental: only what changed (default: processing.mode).",
)
@click.option("--dry-run", is_flag=True, help="Write the reports, change no registry row.")
@click.option("--auto-approve", is_flag=True, help="New master keys become Active at once.")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the latest interrupted run, with the options it was started with.",
)
@click.option(
    "--keys",
    type=click.IntRange(min=1),
    help="First regenerate mock inputs with N keys per system (stress runs).",
)
@click.option("--systems", help="Reconcile only these systems, e.g. A,C (A is always included).")
@click.option("--fail-on-diff", is_flag=True, help="Exit 1 when any discrepancy is found.")
@click.option(
    "--fail-on",
    metavar="KINDS",
    callback=_discrepancy_kinds,
    help="Exit 1 only on these: missing-in-a, missing-from-system, duplicates, rejected "
    "(comma-separated).",
)
@pass_app
def run(
    app: AppContext,
    mode: str | None,
    dry_run: bool,
    auto_approve: bool,
    resume: bool,
    keys: int | None,
    systems: str | None,
    fail_on_diff: bool,
    fail_on: tuple[str, ...],
) -> None:
    """Reconcile the sources, write the reports and update the state.

    \b
    Example:
      keysync run --keys 10000 --auto-approve
      keysync run --mode incremental --fail-on-diff
      keysync run --fail-on missing-in-a,rejected
      keysync run --resume
    """
    from keysync.console import ProgressLine, final_line, print_run_result
    from keysync.logs import tell_user
    from keysync.runner import RunOptions, refuse_without_inputs
    from keysync.runner import run as run_reconciliation

    chosen = _split_systems(systems)
    with app.failures_logged(creating_nothing=True):
        if resume and keys is not None:  # even with nothing to resume: a slip rewrites nothing
            fail(
                f"--resume continues an interrupted run on the inputs it read, which --keys "
                f"{keys} would regenerate first: drop --keys, or run without --resume"
            )
        _check_locations(app)
        if keys is None:  # (--keys writes them)
            refuse_without_inputs(app.config, chosen)
    with app.failures_logged():
        _make_folders(app, ("paths.output", "paths.data", "paths.checkpoints"))
        if resume:
            _check_resume_options(
                app,
                dry_run=dry_run,
                auto_approve=auto_approve,
                mode=mode,
                systems=chosen,
            )
    app.setup_logging()
    options = RunOptions(
        mode=mode,
        dry_run=dry_run,
        auto_approve=auto_approve,
        resume=resume,
        regenerate_keys=keys,
        systems=chosen,
        fail_on_diff=fail_on_diff,
        fail_on=fail_on,
        ends_the_process=process.ends_with_command,
    )
    progress = ProgressLine() if app.shows_progress() else None
    if progress is not None:
        options.on_progress, options.on_phase = progress.update, progress.phase
    try:
        result = run_reconciliation(app.config, options)
    finally:
        if progress is not None:
            progress.clear()
    # The run has ended and recorded how: a Ctrl-C while its summary is said must not end
    # the command as "interrupted, run the command again" (another run would then count
    # towards deprecate_after_runs).
    with stops_ignored():
        if not app.quiet:
            print_run_result(result)
        elif (last := final_line(result)) is not None:
            tell_user(last, run_id=result.run_id, exit_code=result.exit_code or None)
    sys.exit(result.exit_code)


@main.command(short_help="One reconciliation per simulated day; timeline.csv.")
@scenario_option
@days_option("Days to simulate (default: config)")
@pass_app
def simulate(app: AppContext, scenario: str | None, days: int | None) -> None:
    """Run one reconciliation per simulated day and write timeline.csv.

    \b
    Example:
      keysync simulate --scenario recovery --days 30
    """
    from keysync.logs import setup_logging, tell_user
    from keysync.simulate import DayProgress, simulation_folder, simulation_log_file
    from keysync.simulate import simulate as run_simulation

    config = app.config
    _check_locations(app, ("paths.output",))
    _make_folders(app, ("paths.output",))
    # The simulation logs into its own folder: its runs are not the user's runs. Each
    # day's run says a few dozen things; stderr shows warnings (alerts) unless -v.
    log_file = simulation_log_file(config, scenario)
    try:  # the folder's fault, said as such: not logging.file's, which the user may not set
        log_file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        folder = simulation_folder(config, scenario)
        if (in_the_way := file_in_the_way(log_file.parent)) is not None:
            raise ConfigError(
                f"cannot make the simulation folder {folder}: {in_the_way} is a file, not a "
                "folder; move it away"
            ) from None
        raise RunError(
            f"cannot make the simulation folder {folder}: {exc.strerror or exc}; "
            "fix its permissions"
        ) from None
    setup_logging(
        level=config.logging.level,
        log_file=log_file,
        stderr_format=app.log_format,
        quiet=app.quiet or not app.verbose,
        verbose=app.verbose,
    )
    progress = DayProgress() if app.shows_progress() else None
    try:
        result = run_simulation(
            config, scenario=scenario, days=days, on_day=progress.update if progress else None
        )
    finally:
        if progress is not None:
            progress.clear()
    if not app.quiet:
        click.echo(result.describe())
    if result.message:
        tell_user(f"keysync: {result.message}", exit_code=result.exit_code or None)
    sys.exit(result.exit_code)


@main.group("config")
def config_group() -> None:
    """Inspect the configuration.

    \b
    Example:
      keysync -c ./keysync-config.yaml config check
    """


@config_group.command("check")
@pass_app
def config_check(app: AppContext) -> None:
    """Validate the config and print the effective one with all defaults.

    \b
    Example:
      keysync config check
    """
    from keysync.cron import CronSchedule
    from keysync.normalization import rule_warnings, separator_warnings

    config = app.config
    _check_locations(app)  # what `run` would refuse (it creates the rest)
    click.echo(f"# {Path(app.config_path).resolve()}: valid")
    separator = config.provisioning.namespace_separator
    for warning in rule_warnings(config.normalize) + separator_warnings(
        config.normalize, separator
    ):
        click.echo(f"# warning: {warning}")
    click.echo(config.to_yaml().rstrip())
    now = datetime.now(timezone.utc)
    times = CronSchedule(config.schedule).next_times(now, 3)
    click.echo("# next scheduled runs (UTC):")
    for moment in times:
        click.echo(f"#   {moment.strftime('%Y-%m-%dT%H:%M:%SZ')}")
    click.echo("# sources, as a run would find them now:")
    for line in _sources_found(config):
        click.echo(f"#   {line}")


def _sources_found(config: Config) -> Iterator[str]:
    """Each source's file as a run would find it: its header's columns, or why a run
    would leave it out (the file, the line, what to do). A config can be valid and its
    exports missing: ``config check`` still exits 0, but says so before a run does."""
    from keysync.stages.reader import SourceUnavailable, columns_listed, read_header

    for system, source in config.sources.items():
        path = config.source_path(system)
        try:
            header = read_header(system, path, source)
        except SourceUnavailable as exc:
            yield f"{system}: warning: {exc}"
            continue
        yield f"{system}: {path}: columns {columns_listed(header.columns)}"
        if header.timestamp_missing:  # (a run warns of it too: source.timestamp_column_missing)
            yield f"{system}: warning: {header.timestamp_missing}"


@main.command("normalize", short_help="Show what the rules make of sample keys.")
@click.argument("keys", nargs=-1)
@click.option("--steps", is_flag=True, help="Also show what each rule makes of each key.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_app
def normalize(app: AppContext, keys: tuple[str, ...], steps: bool, as_json: bool) -> None:
    """Show what the configured rules make of keys: one per argument, or per line of stdin.

    Nothing is read from the sources and nothing is written: a way to try a rule
    change on sample keys before a run (keys that come out equal are one key). The
    key rules and the length limit only: stdin is read as UTF-8 (a line that is not
    is rejected, encoding, as a run would), the reader's other checks of a row (a
    source's own encoding, NUL bytes, quoting) are not made, and blank lines of
    stdin are skipped.

    \b
    Example:
      keysync normalize "cust_00123" "Café 7" " PROD/abc/789 "
      keysync -c trial.yaml normalize --steps "cust_00123"
      tail -n +2 input/B.csv | cut -d, -f1 | keysync normalize
      keysync normalize -- -123     # a key that starts with '-' goes after --
    """
    from keysync.logs import tell_user
    from keysync.normalization import compile_rules
    from keysync.stages.normalizer import empty_key_message, too_long_message
    from keysync.tables import print_json_list

    config = app.config
    if not keys and sys.stdin.isatty():
        fail("normalize: give keys as arguments, or one per line on stdin")
    normalizer = compile_rules(config.normalize)
    limit = config.processing.max_key_length

    # Each key's first raw form, and the other forms of the keys that have several: for
    # the collision note, over the first _NORMALIZE_TRACKED keys (~160 MB), so a column
    # of ten million keys piped in is not held whole.
    first_raw: dict[str, str] = {}
    other_forms: dict[str, set[str]] = {}

    def result(raw: str) -> tuple[str, str, str, list[tuple[str, str]]]:
        if bytes_shown(raw) != raw:  # stdin's bytes that are not UTF-8
            return raw, "", f"encoding: {_not_utf8(raw)}", []
        key, rejected = normalizer.normalize(raw), ""
        if len(raw) > limit:
            key, rejected = "", f"too-long: {too_long_message(len(raw), limit)}"
        elif not key:
            rejected = f"empty-key: {empty_key_message(config.normalize)}"
        elif (first := first_raw.get(key)) is None:
            if len(first_raw) < _NORMALIZE_TRACKED:
                first_raw[key] = raw
        elif first != raw:
            other_forms.setdefault(key, set()).add(raw)
        return raw, key, rejected, normalizer.trace(raw) if steps else []

    # Streamed: the rows are printed as they come, never held whole.
    results = map(result, keys or _stdin_keys())
    if as_json:
        print_json_list(
            {"raw": bytes_shown(raw), "key": key or None, "rejected": rejected or None}
            | ({"steps": [{"rule": r, "key": k} for r, k in trail]} if steps else {})
            for raw, key, rejected, trail in results
        )
    else:
        _print_normalized(results, steps)
    if other_forms:  # what a run would count as duplicates with collision = true
        ranked = sorted(other_forms.items(), key=lambda item: -len(item[1]))
        shown = ", ".join(f"{key} ({len(raws) + 1} raw forms)" for key, raws in ranked[:5])
        more = f" and {len(ranked) - 5:,} more" if len(ranked) > 5 else ""
        among = (
            f" (among the first {_NORMALIZE_TRACKED:,} keys)"
            if len(first_raw) >= _NORMALIZE_TRACKED
            else ""
        )
        tell_user(
            f"{len(ranked):,} {'keys come' if len(ranked) > 1 else 'key comes'} out of more than "
            f"one raw form{among}, which a run takes as one key (a collision): {shown}{more}",
            stderr_format=app.log_format,
            quiet=app.quiet,
        )


def _print_normalized(
    results: Iterable[tuple[str, str, str, list[tuple[str, str]]]], steps: bool
) -> None:
    """The table of ``normalize``: a row a key (and one a rule with ``--steps``)."""
    from keysync.tables import MAX_CELL, print_table

    rows = (
        row
        for raw, key, rejected, trail in results
        for row in [[_raw_shown(raw), key or f"rejected, {rejected}"]]
        + [[f"  {rule}", repr(text)] for rule, text in trail]
    )
    headers = ["raw / rule" if steps else "raw", "key"]
    first = list(islice(rows, _NORMALIZE_HELD))
    if len(first) < _NORMALIZE_HELD:  # all of them: columns as wide as their cells
        print_table(headers, first)
    else:  # the rest streamed, the raw column as wide as a table cell may be
        print_table(headers, chain(first, rows), [MAX_CELL, 0])


_NORMALIZE_HELD = 10_000  # rows of `normalize` held to size the columns exactly
_NORMALIZE_TRACKED = 1_000_000  # distinct keys whose raw forms `normalize` compares


def _raw_shown(raw: str) -> str:
    """A raw key as the table shows it: quoted, escapes as Python writes them; a byte of
    stdin that is not UTF-8 as ``\\xff``, as in a bytes literal ('ab\\xffc')."""
    if bytes_shown(raw) == raw:
        return repr(raw)
    return repr(raw.encode("utf-8", "surrogateescape"))[1:]


def _not_utf8(raw: str) -> str:
    """The first byte of a line of stdin that is not UTF-8 (read with surrogateescape, it
    is a U+DC80-U+DCFF), as a run's ``encoding`` rejection names it."""
    first = next(i for i, char in enumerate(raw) if "\udc80" <= char <= "\udcff")
    at = len(raw[:first].encode("utf-8", "surrogateescape")) + 1
    return f"byte 0x{ord(raw[first]) - 0xDC00:02X} at byte {at} is not valid UTF-8"


def _stdin_keys() -> Iterator[str]:
    """One key per non-blank line of stdin, without a BOM at its start (as a file read).

    Read as UTF-8 whatever the locale, a byte that is not UTF-8 kept (surrogateescape)
    for ``_not_utf8`` to name: a strict locale's stdin raised it mid-table instead."""
    if isinstance(sys.stdin, io.TextIOWrapper):  # (not when a caller replaced it)
        sys.stdin.reconfigure(encoding="utf-8", errors="surrogateescape")
    for number, line in enumerate(sys.stdin):
        key = line.rstrip("\r\n")
        if number == 0:
            key = key.removeprefix("\ufeff")
        if key:
            yield key


def _register_state_commands() -> None:
    from keysync.cli_state import STATE_COMMANDS

    for command in STATE_COMMANDS:
        main.add_command(command)


_register_state_commands()


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))
