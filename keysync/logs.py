"""Structured logging (placeholder API; see issue 7 for the full implementation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog


def setup_logging(
    *,
    level: str,
    log_file: Path | None,
    stderr_format: str = "console",
    quiet: bool = False,
    verbose: int = 0,
) -> None:
    structlog.configure()


def get_logger(**initial: Any) -> Any:
    return structlog.get_logger(**initial)


def bind_run(run_id: str) -> None:
    structlog.contextvars.bind_contextvars(run_id=run_id)


def unbind_run() -> None:
    structlog.contextvars.unbind_contextvars("run_id")
