"""One reconciliation run, start to finish: the library API behind ``keysync run``.

``run(config, options) -> RunResult`` reads every source through the
pipeline, compares, plans registry changes, writes the reports to a staging
folder, commits all state changes in one transaction, then publishes the
reports. A kill at any point before the commit leaves the state as it was.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from keysync import logs
from keysync.comparison import Comparison, SystemSummary, compare
from keysync.config import Config
from keysync.errors import EXIT_DEGRADED, EXIT_DIFF, EXIT_OK, ConfigError, RunError
from keysync.pipeline import Pipeline, SourceJob
from keysync.stages.merger import KeyIndex
from keysync.stages.reporter import ReportWriter, summary_rows, write_reconciliation_reports


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
    progress: bool = False


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


def run(config: Config, options: RunOptions | None = None) -> RunResult:
    """Reconcile the configured sources; see SPEC.md "Commands" for the contract."""
    options = options or RunOptions()
    started = utc_now()
    clock = time.monotonic()
    systems = select_systems(config, options.systems)
    mode = options.mode or config.processing.mode
    run_id = new_run_id(started)
    log = logs.get_logger(stage="runner")
    if options.regenerate_keys is not None:
        from keysync.mockdata import generate

        generate(config, keys=options.regenerate_keys)
    logs.bind_run(run_id)
    try:
        log.info(
            "run.started",
            mode=mode,
            systems=systems,
            dry_run=options.dry_run,
            auto_approve=options.auto_approve or config.provisioning.auto_approve,
        )
        stalled = _stalled_system(config, systems)
        jobs = [
            SourceJob(s, config.source_path(s), config.sources[s], stall=(s == stalled))
            for s in systems
        ]
        index = KeyIndex(systems)
        result = Pipeline(config, jobs, index=index, run_id=run_id).run()
        read_s = time.monotonic() - clock
        authority = config.authority
        if authority in result.unavailable:
            raise RunError(
                f"the authority {authority} is unavailable: {result.unavailable[authority]}"
            )
        peers = [s for s in systems if s != authority]
        if all(p in result.unavailable for p in peers):
            reasons = "; ".join(f"{p}: {result.unavailable[p]}" for p in peers)
            raise RunError(f"no peer of {authority} is available ({reasons})")
        comparison = compare(index, authority, result.unavailable)
        run_result = _report(config, options, run_id, mode, started, comparison, systems)
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
    except RunError as exc:
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
