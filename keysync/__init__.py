"""keysync: reconcile business keys across systems.

The library API is ``keysync.run(config, options) -> RunResult``; the command
line (``keysync ...``) is a thin shell over it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from keysync.runner import RunOptions, RunResult, run

__all__ = ["RunOptions", "RunResult", "__version__", "run"]


def __getattr__(name: str) -> Any:
    # Imported lazily: `keysync --help` should not pay for the whole pipeline.
    if name in ("run", "RunOptions", "RunResult"):
        from keysync import runner

        return getattr(runner, name)
    raise AttributeError(name)
