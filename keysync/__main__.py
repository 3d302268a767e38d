"""``python -m keysync`` and the ``keysync`` command (``entry``).

Kept light on purpose: it takes Ctrl-C and SIGTERM before the command line's modules
are imported (a tenth of a second or more), where Python would print a traceback for
one and end silently with 143 for the other, and holds them while the command line is
parsed (click would say "Aborted!", exit 1); the command takes them over (cli.invoke).
"""

from __future__ import annotations

import os
import signal


def _stopped_while_starting(_signum: int, _frame: object) -> None:
    os.write(2, b"keysync: error: interrupted while starting; nothing was done\n")
    os._exit(130)  # nothing is open yet that an exit would have to close


def entry() -> None:
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
