"""One reconciliation run, start to finish: the library API behind ``keysync run``.

``run(config, options) -> RunResult`` reads every source through the
pipeline, compares, plans registry changes, writes the reports to a staging
folder, commits all state changes in one transaction, then publishes the
reports. A kill at any point before the commit leaves the state as it was.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from keysync import checkpoint, logs
from keysync.checkpoint import CheckpointHeader, CheckpointWriter, RestoredRun
from keysync.comparison import Comparison, SystemSummary, compare
from keysync.config import Config
from keysync.errors import (
    EXIT_DEGRADED,
    EXIT_DIFF,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ConfigError,
    Interrupted,
    RunError,
)
from keysync.messages import KeyBatch
from keysync.pipeline import Pipeline, PipelineObserver, SourceJob
from keysync.stages.merger import KeyIndex
from keysync.stages.reporter import ReportWriter, summary_rows, write_reconciliation_reports

_IMPORTED = time.monotonic()


def seconds_since_process_start() -> float:
    """How long this process has lived (Linux /proc; elsewhere since keysync was imported)."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            return float(uptime.read().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


@dataclass
class RunOptions:
    """What the caller asked for; ``None`` means "as configured"."""

    mode: str | None = None
    dry_run: bool = False
    auto_approve: bool = False
    resume: bool = False
    regenerate_keys: int | None = None
    systems: list[str] | None = None
    fail_on_diff: bool = False
    # Called now and then while reading: (bytes done, total bytes, rows read per system).
    on_progress: Callable[[int, int, dict[str, int]], None] | None = None


@dataclass
class RunResult:
    """The outcome of a run, as the CLI prints it and ``summary.json`` records it."""

    run_id: str
    exit_code: int
    mode: str
    summaries: list[SystemSummary]
    output_dir: Path
    reports: list[Path] = field(default_factory=list)
    message: str = ""
    dry_run: bool = False
    discrepancies: bool = False
    durations: dict[str, float] = field(default_factory=dict)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """ISO 8601 UTC with a ``Z``, to the second: ``2026-11-27T02:00:00Z``."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id(moment: datetime) -> str:
    """Sortable and unique: ``20261127T020000Z-3f9a``."""
    return moment.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def select_systems(config: Config, requested: list[str] | None) -> list[str]:
    """The systems of this run: all configured, or ``--systems`` (the authority always)."""
    configured = list(config.sources)
    if not requested:
        return configured
    unknown = [s for s in requested if s not in config.sources]
    if unknown:
        raise ConfigError(
            f"--systems: unknown system {', '.join(unknown)} (configured: {', '.join(configured)})"
        )
    chosen = set(requested) | {config.authority}
    if len(chosen) < 2:
        raise ConfigError(
            f"--systems: name at least one peer of {config.authority} to compare with"
        )
    return [s for s in configured if s in chosen]


class _Mirror:
    """Registry view used until the state store answers (master key per strategy)."""

    def __init__(self, config: Config) -> None:
        self.namespaced = config.provisioning.strategy == "namespaced"
        self.separator = config.provisioning.namespace_separator

    def master_key_for(self, system: str, key: str) -> str:
        return f"{system}{self.separator}{key}" if self.namespaced else key

    def status_for(self, system: str, key: str) -> str:
        return "Proposed"


class _NoHistory:
    def __init__(self, now: str) -> None:
        self.now = now

    def missing_since(self, system: str, key: str) -> str:
        return self.now


def _stalled_system(config: Config, systems: list[str]) -> str | None:
    if not config.simulation.failures.simulate_timeout:
        return None
    from keysync.mockdata import stalled_system

    stalled = stalled_system(config)
    return stalled if stalled in systems else None


class _RunObserver(PipelineObserver):
    """Feeds the checkpoint, and turns Ctrl-C / SIGTERM into a clean stop."""

    def __init__(
        self,
        checkpoint: CheckpointWriter,
        resumed_at: float | None,
        index: KeyIndex,
        total_bytes: int,
        on_progress: Callable[[int, int, dict[str, int]], None] | None,
    ) -> None:
        self.checkpoint = checkpoint
        self.stop_requested = False
        self.resumed_at = resumed_at
        self.index = index
        self.total_bytes = total_bytes
        self.on_progress = on_progress
        self._shown = 0.0

    def _progress(self) -> None:
        if self.on_progress is None or time.monotonic() - self._shown < 0.1:
            return
        self._shown = time.monotonic()
        done = sum(s.position.offset for s in self.index.systems.values())
        rows = {name: s.rows_read for name, s in self.index.systems.items()}
        self.on_progress(min(done, self.total_bytes), self.total_bytes, rows)

    def batch_applied(self, batch: KeyBatch) -> None:
        if self.resumed_at is not None:
            # The first batch after a resume: rows are being processed again.
            logs.get_logger(stage="runner").info(
                "run.resumed",
                resume_s=round(seconds_since_process_start(), 3),
                replay_s=round(self.resumed_at, 3),
            )
            self.resumed_at = None
        self._progress()
        self.checkpoint.add(batch)

    def source_finished(self, system: str) -> None:
        self.checkpoint.source_finished(system)

    def source_unavailable(self, system: str, reason: str) -> None:
        self.checkpoint.source_unavailable(system, reason)

    def should_stop(self) -> bool:
        return self.stop_requested


@contextmanager
def _stop_on_signals(observer: _RunObserver) -> Iterator[None]:
    """First Ctrl-C / SIGTERM: stop at the next clean point. Second: exit at once."""

    def handle(signum: int, frame: object) -> None:
        if observer.stop_requested:
            os._exit(EXIT_INTERRUPTED)
        observer.stop_requested = True

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _resumable(config: Config, options: RunOptions) -> RestoredRun | None:
    """The latest interrupted run to continue, or None (said in the log) if there is none."""
    log = logs.get_logger(stage="runner")
    for folder in checkpoint.interrupted_runs(config.checkpoint_dir):
        header = checkpoint.read_header(folder)
        checkpoint.verify_inputs(header, config)
        restored = checkpoint.load(folder)
        if restored.torn_tail:
            log.warning(
                "checkpoint.torn",
                run_id=header.run_id,
                frames=restored.frames,
                detail="the last checkpoint was cut short; continuing from the one before it",
            )
        return restored
    log.warning("run.nothing_to_resume", detail="no interrupted run to resume; running normally")
    return None


def run(config: Config, options: RunOptions | None = None) -> RunResult:
    """Reconcile the configured sources; see SPEC.md "Commands" for the contract."""
    options = options or RunOptions()
    started = utc_now()
    clock = time.monotonic()
    log = logs.get_logger(stage="runner")
    if options.regenerate_keys is not None:
        from keysync.mockdata import generate

        generate(config, keys=options.regenerate_keys)
    restored = _resumable(config, options) if options.resume else None
    if restored is not None:
        header = restored.header
        run_id = header.run_id
        systems = restored.header.systems
        mode = restored.header.mode
        index = restored.index
        unavailable = dict(restored.unavailable)
        writer = CheckpointWriter(
            restored.directory, None, config.processing.checkpoint_interval, restored.frames
        )
    else:
        systems = select_systems(config, options.systems)
        mode = options.mode or config.processing.mode
        run_id = new_run_id(started)
        index = KeyIndex(systems)
        unavailable = {}
        header = CheckpointHeader(
            format=checkpoint.FORMAT_VERSION,
            run_id=run_id,
            created_at=iso(started),
            settings_hash=checkpoint.settings_hash(config, systems),
            systems=systems,
            mode=mode,
            flags={"dry_run": options.dry_run, "auto_approve": options.auto_approve},
            inputs=[checkpoint.fingerprint(s, config.source_path(s)) for s in systems],
        )
        writer = CheckpointWriter(
            config.checkpoint_dir / run_id, header, config.processing.checkpoint_interval
        )
    logs.bind_run(run_id)
    observer = _RunObserver(
        writer,
        time.monotonic() - clock if restored else None,
        index,
        sum(f.size for f in header.inputs),
        options.on_progress,
    )
    try:
        with _stop_on_signals(observer):
            log.info(
                "run.started",
                mode=mode,
                systems=systems,
                dry_run=options.dry_run,
                auto_approve=options.auto_approve or config.provisioning.auto_approve,
                resumed=restored is not None,
            )
            stalled = _stalled_system(config, systems)
            jobs = [
                SourceJob(
                    s,
                    config.source_path(s),
                    config.sources[s],
                    position=index[s].position,
                    stall=(s == stalled),
                )
                for s in systems
                if s not in unavailable
            ]
            result = Pipeline(config, jobs, index=index, run_id=run_id, observer=observer).run()
            writer.flush()
            unavailable.update(result.unavailable)
            read_s = time.monotonic() - clock
            authority = config.authority
            if authority in unavailable:
                raise RunError(
                    f"the authority {authority} is unavailable: {unavailable[authority]}"
                )
            peers = [s for s in systems if s != authority]
            if all(p in unavailable for p in peers):
                reasons = "; ".join(f"{p}: {unavailable[p]}" for p in peers)
                raise RunError(f"no peer of {authority} is available ({reasons})")
            comparison = compare(index, authority, unavailable)
            run_result = _report(config, options, run_id, mode, started, comparison, systems)
        writer.close()
        checkpoint.remove(writer.directory)
        run_result.durations = {
            "read_s": round(read_s, 3),
            "total_s": round(time.monotonic() - clock, 3),
        }
        log.info(
            "run.completed",
            exit_code=run_result.exit_code,
            duration_s=run_result.durations["total_s"],
            discrepancies=run_result.discrepancies,
            **{f"{s.system}_matched": s.matched for s in run_result.summaries if s.available},
        )
        return run_result
    except Interrupted:
        writer.flush()
        writer.close()
        log.warning("run.interrupted", checkpoint=str(writer.directory), frames=writer.frames)
        raise Interrupted(
            f"run {run_id} interrupted; a checkpoint is kept: `keysync run --resume` continues it"
        ) from None
    except RunError as exc:
        writer.close()
        checkpoint.remove(writer.directory)
        log.error("run.failed", reason=str(exc))
        raise
    finally:
        logs.unbind_run()


def _report(
    config: Config,
    options: RunOptions,
    run_id: str,
    mode: str,
    started: datetime,
    comparison: Comparison,
    systems: list[str],
) -> RunResult:
    now = iso(utc_now())
    output_dir = config.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    writer = ReportWriter(output_dir, run_id, now)
    files = {s: config.source_path(s) for s in systems}
    write_reconciliation_reports(writer, comparison, files, _Mirror(config), _NoHistory(now))
    summaries = list(comparison.summaries.values())
    degraded = any(not s.available for s in summaries)
    discrepancies = comparison.has_discrepancies()
    if degraded:
        exit_code = EXIT_DEGRADED
        missing = [s.system for s in summaries if not s.available]
        message = f"degraded: {', '.join(missing)} unavailable, not compared"
    elif discrepancies and options.fail_on_diff:
        exit_code, message = EXIT_DIFF, "discrepancies found (--fail-on-diff)"
    else:
        exit_code, message = EXIT_OK, ""
    columns = [
        "system",
        "available",
        "rows_read",
        "rows_rejected",
        "unique_keys",
        "duplicate_keys",
        "matched",
        "missing_in_a",
        "missing_from_system",
        "match_rate",
    ]
    writer.write_json(
        "summary.json",
        {
            "run_id": run_id,
            "mode": mode,
            "started_at": iso(started),
            "finished_at": now,
            "flags": {
                "dry_run": options.dry_run,
                "auto_approve": options.auto_approve,
                "resume": options.resume,
                "fail_on_diff": options.fail_on_diff,
                "systems": systems,
            },
            "systems": [
                {**dict(zip(columns, row)), "reason": s.unavailable_reason}
                for row, s in zip(summary_rows(summaries), summaries)
            ],
            "discrepancies": discrepancies,
            "exit_code": exit_code,
            "message": message,
        },
    )
    reports = writer.publish()
    return RunResult(
        run_id=run_id,
        exit_code=exit_code,
        mode=mode,
        summaries=summaries,
        output_dir=output_dir,
        reports=reports,
        message=message,
        dry_run=options.dry_run,
        discrepancies=discrepancies,
    )
