"""`python -m keysync` ends with its exit code after a Ctrl-C it caught.

CPython sets a flag when a KeyboardInterrupt leaves an exec() of a string (a dataclass
being made as a module imports) and, under ``-m``, ends the process by SIGINT at exit
even when the interrupt was caught. Seen in sweeps: a Ctrl-C as `keysync run` imported
its modules said "interrupted; ..." and then died of SIGINT (-2) instead of exit 130.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SITECUSTOMIZE = """
import click
def _invoke(self, ctx):  # a Ctrl-C that lands in an exec() of a string, as in a dataclass
    exec("raise KeyboardInterrupt")
click.Group.invoke = _invoke
"""


def test_a_ctrl_c_caught_out_of_an_exec_still_ends_with_130(tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSYNC_")}
    env["PYTHONPATH"] = os.pathsep.join([str(hook), *filter(None, [env.get("PYTHONPATH")])])
    done = subprocess.run(
        [sys.executable, "-m", "keysync", "runs"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert done.stderr.strip().endswith("nothing is left half-written: run the command again"), (
        done.stderr
    )
    assert "Traceback" not in done.stderr
