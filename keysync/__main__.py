"""``python -m keysync`` and the ``keysync`` command (``entry``).

Kept light on purpose: it takes Ctrl-C and SIGTERM before the command line's modules
are imported (a tenth of a second or more), where Python would print a traceback for
one and end silently with 143 for the other, and holds them while the command line is
parsed (click would say "Aborted!", exit 1); the command takes them over (cli.invoke).
It also sees to stdin, stdout and stderr before anything opens a file (``_closed_filled``).
"""

from __future__ import annotations

import os
import signal
import sys

EXIT_CANNOT_RUN = 3  # (cli.EXIT_CANNOT_RUN: not imported, to keep this module light)


def _stopped_while_starting(_signum: int, _frame: object) -> None:
    os.write(2, b"keysync: error: interrupted while starting; nothing was done\n")
    os._exit(130)  # nothing is open yet that an exit would have to close


def _closed_filled() -> set[int]:
    """Open ``/dev/null`` on whichever of descriptors 0-2 keysync was started without.

    Started with one closed (``2>&-`` in a cron line), the next file keysync opened took
    its number (with stdout closed, the log file became descriptor 1: whatever a child
    wrote to its stdout would land in the log). And Python makes that stream ``None``:
    with stderr closed, the run's first warning was an AttributeError (exit 1, failed).
    Returns the descriptors that were closed.
    """
    closed = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
    for fd in sorted(closed):
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
    if 0 in closed:
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 (for the process)
    if 2 in closed:
        sys.stderr = open(2, "w", errors="backslashreplace", closefd=False)  # noqa: SIM115
    return closed


def entry() -> None:
    if 1 in _closed_filled():
        # What keysync prints (a listing, an export, a run's summary) would be lost and
        # the command would say 0: refused, as `ls >&-` is.
        os.write(
            2,
            b"keysync: error: standard output is closed (started with >&-); nothing was "
            b"done: give keysync one (> /dev/null discards what it prints)\n",
        )
        sys.exit(EXIT_CANNOT_RUN)
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # ignored by our starter: it stays so
            signal.signal(sig, _stopped_while_starting)
    if os.environ.get("KEYSYNC_TEST_PAUSE_AT") == "starting":  # no logging yet: said by hand
        from keysync import testhooks

        os.write(2, b"paused_for_tests starting\n")
        testhooks.wait()
    from keysync.cli import run_as_command

    run_as_command()


if __name__ == "__main__":
    entry()
