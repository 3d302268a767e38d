"""Test hooks: hold a run at a known point so a test can ``kill -9`` it there.

With ``KEYSYNC_TEST_PAUSE_AT=<phase>`` (or ``<phase>:<n>``) the process logs
``run.paused_for_tests`` and sleeps ``KEYSYNC_TEST_PAUSE_S`` seconds (default
3600). With ``KEYSYNC_TEST_PAUSE_UNTIL=<path>`` as well, it goes on as soon as that
file exists: a test that must act while the run is held releases it when done, so
no step of the test has to beat a timer on a slow machine. Off unless the variables
are set; documented in README.md ("Development").

Phases: ``recording`` (a new run's checkpoint begun, the run not yet recorded in the
state), ``reading:<rows>`` (after that many rows are merged), ``checkpoint-write:<frame>``
(half of that checkpoint frame written, the rest not), ``planning``, ``reporting``
(reports staged, state not committed), ``committing`` (just before the commit),
``mid-commit`` (every row written inside the open transaction, no COMMIT yet),
``publishing`` (state committed, reports not yet renamed into place), ``mid-publish``
(the first report renamed into place, the others not), ``tidying`` (reports in place,
snapshots and checkpoints not yet renewed); in ``generate``, ``mock-publish``
(every new file written aside, none in place yet) and ``mock-mid-publish`` (the first
file renamed into place, the others and the manifest not); in ``registry approve``,
``deprecate`` and ``rekey``, ``mid-change`` (every change written inside the open
transaction, no COMMIT yet) and ``listing`` (the changes committed, not yet listed);
in the ``keysync`` process itself, ``starting`` (before the command line is imported:
``__main__`` holds it, printing ``paused_for_tests starting``) and ``exiting`` (the command done).
"""

from __future__ import annotations

import os
import time


def pause_requested(phase: str) -> int | None:
    """The ``<n>`` of ``KEYSYNC_TEST_PAUSE_AT=<phase>[:<n>]`` (0 without one), or None."""
    wanted = os.environ.get("KEYSYNC_TEST_PAUSE_AT", "")
    name, _, number = wanted.partition(":")
    if name != phase:
        return None
    return int(number) if number.isdigit() else 0


def pause(phase: str) -> None:
    """Log and wait (the caller decided this is the point)."""
    from keysync import logs

    logs.get_logger(stage="testhooks").warning("run.paused_for_tests", phase=phase)
    wait()


def wait() -> None:
    """Sleep ``KEYSYNC_TEST_PAUSE_S`` seconds, or till ``KEYSYNC_TEST_PAUSE_UNTIL`` exists."""
    until = time.monotonic() + float(os.environ.get("KEYSYNC_TEST_PAUSE_S", "3600"))
    release = os.environ.get("KEYSYNC_TEST_PAUSE_UNTIL")
    while time.monotonic() < until:
        if release and os.path.exists(release):
            return
        time.sleep(min(0.05, max(0.0, until - time.monotonic())))


def pause_for_tests(phase: str) -> None:
    """Pause here if ``KEYSYNC_TEST_PAUSE_AT`` names this phase (without a number)."""
    if pause_requested(phase) == 0:
        pause(phase)
