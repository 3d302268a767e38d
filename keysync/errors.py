"""Errors a user can foresee, each carrying the exit code of SPEC.md.

The CLI turns a ``KeysyncError`` into one line on stderr and its exit code;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

EXIT_OK = 0
EXIT_DIFF = 1
EXIT_USAGE = 2
EXIT_CANNOT_RUN = 3
EXIT_DEGRADED = 4
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141  # stdout closed by its reader (`| head`): 128 + SIGPIPE, as a shell shows


class KeysyncError(Exception):
    """A foreseeable problem: one line for the user, and the exit code to end with."""

    exit_code = EXIT_CANNOT_RUN

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(KeysyncError):
    """The configuration file is missing, malformed or invalid (exit 2).

    ``at``: the setting whose line the error is shown at, where the message begins with
    another (``sources: system name 'B-x' ...`` is at the line of ``B-x``)."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, exit_code: int | None = None, *, at: str = "") -> None:
        super().__init__(message, exit_code)
        self.at = at


class RunError(KeysyncError):
    """The run could not be done: A unreadable, no peer, lock held, stale checkpoint (exit 3)."""

    exit_code = EXIT_CANNOT_RUN


class ResumableError(RunError):
    """The run failed for a reason the user can mend (a full disk): its checkpoint is kept.

    The rows read so far are not lost: ``keysync run --resume`` continues from the
    last checkpoint once the cause is gone.
    """

    def __init__(self, problem: str, mend: str) -> None:
        super().__init__(f"{problem}; {mend}")
        self.problem = problem  # what and where, without what to do: `simulate` says its own


class Interrupted(KeysyncError):
    """Ctrl-C or SIGTERM: the run stopped at a clean point and kept a checkpoint (exit 130)."""

    exit_code = EXIT_INTERRUPTED


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a supervisor's stop), taken as Ctrl-C is: one line and exit 130,
    where Python's default would end the command at once, silently, with 143."""


STOPS = (signal.SIGINT, signal.SIGTERM)  # what stops a command: Ctrl-C, and a kill


class _Process:
    """What keysync knows of the process it runs in."""

    # True in the keysync process itself (cli.run_as_command): nothing comes after the
    # command, so a run's handlers may stay till the exit.
    ends_with_command = False


process = _Process()


@contextlib.contextmanager
def stops_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done (where the platform can hold them);
    one that came meanwhile arrives as the block ends.

    A process started in the block inherits the mask (across fork and exec): it is born
    deaf to both, as are the processes it forks in turn. That is what a child of the
    command wants: a Ctrl-C reaches every process of the terminal's group, and a child
    still importing would die of it with a traceback; the parent decides when to stop.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


@contextlib.contextmanager
def stops_ignored() -> Iterator[None]:
    """Ctrl-C and SIGTERM ignored in the block: a command's outcome is decided and being
    said, and one now would only garble it (a traceback, "interrupted" for a change made).
    Put back after for a caller that lives on; the keysync process ends with the command
    and keeps them ignored (``cli.run_as_command``). Outside the main thread (a command
    called from a worker thread) nothing to do: signals reach the main thread only, and
    ``signal.signal`` would raise."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOPS}
    try:
        yield
    finally:
        if not process.ends_with_command:
            for sig, handler in previous.items():
                if handler is not None:  # None: not set from Python, none to put back
                    signal.signal(sig, handler)


def stop_name(stop: BaseException) -> str:
    """What stopped a command, as a message names it."""
    return "SIGTERM" if isinstance(stop, Terminated) else "Ctrl-C"


@contextlib.contextmanager
def children_deaf_to_stops() -> Iterator[None]:
    """Processes started in the block by multiprocessing (spawn, forkserver) never take
    Ctrl-C or SIGTERM: :func:`stops_held`, with multiprocessing's resource tracker started
    first, as starting it unblocks both whatever was blocked before (CPython 3.11)."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    with stops_held():
        yield


def raise_terminated(_signum: int, _frame: object) -> None:
    """The SIGTERM handler of every command (a run puts its own in place while it reads)."""
    raise Terminated


def child_died(child: str, exit_code: int | None) -> str:
    """Why a child process is gone, and what to do: the OS's OOM killer is the usual cause."""
    if exit_code == -signal.SIGKILL:
        how = f"was killed by signal {-exit_code} (out of memory?)"
    elif exit_code is not None and exit_code < 0:
        how = f"was killed by signal {-exit_code}"
    else:
        how = f"died (exit code {exit_code})"
    return f"{child} {how}; run again"


def file_in_the_way(path: Path) -> Path | None:
    """The file (not a folder) nearest the root on the way to ``path``, ``path`` included:
    what a message should name when a folder cannot be made there."""
    in_the_way = [p for p in (path, *path.parents) if os.path.exists(p) and not os.path.isdir(p)]
    return in_the_way[-1] if in_the_way else None


def bytes_shown(text: str) -> str:
    r"""``text`` as a message or a log line can hold it: each byte that was not UTF-8 (a
    lone surrogate, as Python keeps them in paths and arguments: ``bad\xffdir``) as the
    four characters ``\xNN``. ``text`` itself when it has none."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join(map(_surrogate_escaped, text))
    return text


def _surrogate_escaped(char: str) -> str:
    """A lone surrogate as the bytes it stands for: surrogateescape's U+DC80-U+DCFF for
    one undecodable byte, else the surrogate's own UTF-8 bytes."""
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return "".join(f"\\x{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))
    return char
