"""Set-up the phase benchmarks share: read a config's sources, start a run on fresh state."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from keysync.config import Config
from keysync.pipeline import Pipeline, PipelineObserver, PipelineResult, SourceJob
from keysync.runner import new_run_id, utc_now
from keysync.stages.merger import KeyIndex
from keysync.state import DB_NAME, StateStore


def source_jobs(config: Config) -> list[SourceJob]:
    return [SourceJob(s, config.source_path(s), config.sources[s]) for s in config.sources]


def read_index(config: Config, observer: PipelineObserver | None = None) -> PipelineResult:
    """Every source read into a fresh index by the real pipeline, as a run reads them."""
    index = KeyIndex(list(config.sources))
    return Pipeline(config, source_jobs(config), index=index, observer=observer).run()


def begin_fresh_run(folder: Path, *, dry_run: bool = False) -> tuple[StateStore, str, datetime]:
    """A new state file in ``folder`` with one run begun: (store, run id, its start time)."""
    store = StateStore.open(folder / DB_NAME)
    now = utc_now()
    run_id = new_run_id(now)
    store.begin_run(run_id, now, "full", {}, dry_run=dry_run)
    return store, run_id, now
