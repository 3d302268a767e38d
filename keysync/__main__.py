"""``python -m keysync`` and the ``keysync`` command (``entry``).

Kept light on purpose: it takes Ctrl-C and SIGTERM before the command line's modules
are imported (a tenth of a second or more), where Python would print a traceback for
one and end silently with 143 for the other.
"""

from __future__ import annotations

import os
import signal
import time


def _stopped_while_starting(_signum: int, _frame: object) -> None:
    os.write(2, b"keysync: error: interrupted while starting; nothing was done\n")
    os._exit(130)  # nothing is open yet that an exit would have to close


def entry() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stopped_while_starting)
    if os.environ.get("KEYSYNC_TEST_PAUSE_AT") == "starting":  # testhooks, without its imports
        os.write(2, b"paused_for_tests starting\n")
        time.sleep(float(os.environ.get("KEYSYNC_TEST_PAUSE_S", "3600")))
    from keysync.cli import run_as_command

    run_as_command()


if __name__ == "__main__":
    entry()
