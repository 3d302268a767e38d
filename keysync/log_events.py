"""The catalogue of log events: each event's level, the fields it carries and what it says.

Kept apart from the logging machinery (keysync/logs.py), which changes rarely: this list
grows with every event a feature adds. docs/logging.md lists the same catalogue, and a test
checks that the two agree and that every event keysync emits is here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class EventSpec:
    """One documented event: its level and the fields it carries besides the common ones."""

    level: str
    fields: tuple[str, ...]
    description: str
    # False: a routine event that comes many times a run (a checkpoint every 5,000 rows is
    # ~1,000 lines at 5 x 1M keys). It is in the log file and in ``--log-format json`` as
    # always, but the console shows it only with ``-v``: there it would bury what matters.
    console: bool = True


EVENTS: Final[dict[str, EventSpec]] = {
    "run.started": EventSpec(
        "info",
        ("mode", "systems", "dry_run", "auto_approve", "resumed"),
        "a run begins (or continues, `resumed: true`); what it was asked to do",
    ),
    "run.completed": EventSpec(
        "info",
        ("exit_code", "duration_s"),
        "a run ended with its reports written; outcome, counts and durations",
    ),
    # File only: the command's own line (`keysync: error: ...`, or a bug's traceback) says
    # the same on the console; shown twice, a reader took it for two problems.
    "run.failed": EventSpec(
        "error",
        ("reason",),
        "the run could not be done (exit 3); `exception` too when a bug caused it",
        console=False,
    ),
    "run.interrupted": EventSpec(
        "warning",
        ("checkpoint",),
        "Ctrl-C or SIGTERM (exit 130); the checkpoint folder is kept for `--resume`",
    ),
    "run.resumed": EventSpec(
        "info",
        ("resume_s", "replay_s"),
        "`--resume` is processing rows again: `resume_s` after the process started, "
        "`replay_s` spent restoring the checkpoint",
    ),
    "run.unpublished": EventSpec(
        "error",
        ("reason",),
        "a run committed its state but could not put its reports in place (a full disk):"
        " `--resume` does",
    ),
    "run.already_committed": EventSpec(
        "info",
        ("resumed_run_id", "detail"),
        "`--resume` of a run killed after its commit: its reports put in place, no new run",
    ),
    "inputs.regenerated": EventSpec(
        "info",
        ("keys_per_system", "seed", "scenario", "folder"),
        "`run --keys N` replaced the mock inputs at the source paths before reading them",
    ),
    "run.nothing_to_resume": EventSpec(
        "warning", ("detail",), "`--resume` found no interrupted run; a normal run follows"
    ),
    "source.available": EventSpec(
        "info", ("system", "bytes"), "a source file was opened and its header read", console=False
    ),
    "source.unavailable": EventSpec(
        "warning",
        ("system", "reason"),
        "a source is missing, unreadable, silent too long or without one usable row; "
        "without a peer the run is degraded",
    ),
    "source.unterminated": EventSpec(
        "warning",
        ("system", "path", "detail"),
        "a source's last line has no line end, as an export cut short ends",
    ),
    "source.timestamp_column_missing": EventSpec(
        "warning",
        ("system", "detail"),
        "a source's header lacks its timestamp_column (set, or a column like it there): "
        "last_seen_at stays empty for it",
    ),
    "source.stalling": EventSpec(
        "warning",
        ("system", "reason"),
        "a reader simulates a source that stops answering (`simulate_timeout`)",
    ),
    "source.finished": EventSpec(
        "info",
        ("system", "rows_read", "rows_rejected"),
        "a source has been read to its end and merged",
    ),
    "row.rejected": EventSpec(
        "debug",
        ("system", "line", "error_type", "message"),
        "one rejected row (debug: one event per row)",
    ),
    "source.rejected_rows": EventSpec(
        "info",
        ("system", "count"),
        "how many rows of one source were rejected",
        console=False,  # the summary table's `rejected` column says it
    ),
    "checkpoint.saved": EventSpec(
        "info",
        ("frame", "rows", "bytes"),
        "a checkpoint frame is on disk (every `checkpoint_interval` rows)",
        console=False,
    ),
    "checkpoint.torn": EventSpec(
        "warning",
        ("frames", "detail"),
        "the last checkpoint frame was cut short (a kill while writing); the one before is used",
    ),
    "incremental.fallback": EventSpec(
        "warning",
        ("system", "reason"),
        "incremental mode reads this source in full, and says why (no snapshot, settings...)",
    ),
    "incremental.unchanged": EventSpec(
        "info",
        ("system", "rows_read", "seconds"),
        "a source is byte-identical to the last run's (size and SHA-256): its index comes "
        "from the snapshot, it is not read",
    ),
    "incremental.changed": EventSpec(
        "info",
        ("system", "detail"),
        "a source changed since the last run's snapshot: the pipeline reads it in full",
    ),
    "incremental.snapshot_saved": EventSpec(
        "info",
        ("system", "path"),
        "a source snapshot for the next incremental run is in place",
        console=False,
    ),
    "incremental.snapshot_skipped": EventSpec(
        "warning",
        ("system", "reason"),
        "no snapshot could be kept: the next incremental run reads this source in full",
    ),
    "incremental.reused": EventSpec(
        "info",
        ("run", "systems", "detail"),
        "nothing changed since the last run (sources, settings, registry): its reports are "
        "this run's, nothing is read or compared",
    ),
    "incremental.not_reused": EventSpec(
        "debug",
        ("reason",),
        "why an incremental run compares rather than reuse the last run's reports",
    ),
    "incremental.record_skipped": EventSpec(
        "warning",
        ("reason",),
        "the record of this run's reports could not be kept: the next incremental run "
        "compares, even if nothing changed",
    ),
    "checkpoint.unusable": EventSpec(
        "warning",
        ("path", "reason"),
        "`--resume` found a checkpoint it cannot trust (unreadable); a fresh run follows",
    ),
    "checkpoint.superseded": EventSpec(
        "warning",
        ("path", "reason"),
        "a checkpoint of a run interrupted before a later run committed its state: removed,"
        " nothing is left to resume",
    ),
    "key.proposed": EventSpec(
        "debug",
        ("master_key", "system", "key"),
        "provisioning decision: a master key is proposed for an out-of-authority key",
    ),
    "key.approved": EventSpec(
        "info", ("master_key", "reason"), "a master key became Active by hand", console=False
    ),
    # One line per key: an expiry wave or a fixed peer makes thousands in one run.
    "key.deprecated": EventSpec(
        "info", ("master_key", "reason"), "a master key became Deprecated", console=False
    ),
    "key.rekeyed": EventSpec(
        "info",
        ("master_key", "new_master_key", "reason"),
        "a master key handed over to its key's form under the rules now (`registry rekey`)",
        console=False,
    ),
    "key.resolved": EventSpec(
        "info", ("master_key",), "a key with a master key now appears in A", console=False
    ),
    "registry.name_taken": EventSpec(
        "warning",
        ("count", "detail"),
        "out-of-authority keys got no master key: another key's entry has the name (after a "
        "strategy switch, with a namespace_separator keys can hold)",
    ),
    "registry.changed": EventSpec(
        "info",
        ("proposed", "approved", "deprecated", "resolved", "dry_run"),
        "the registry changes of one run (counts), committed or, with --dry-run, not",
    ),
    "report.written": EventSpec(
        "info", ("report", "path", "rows"), "a report file is in place", console=False
    ),
    "report.recovered": EventSpec(
        "warning",
        ("detail",),
        "a run had committed its state but not yet published its reports; now published",
    ),
    "rules.changed": EventSpec(
        "warning",
        ("detail",),
        "the settings that shape keys differ from the last successful run's (an audit event too)",
    ),
    "settings.changed": EventSpec(
        "info",
        ("detail",),
        "the configured systems, a key column or the lifecycle settings differ from the "
        "last successful run's (an audit event too)",
    ),
    "authority.changed": EventSpec(
        "warning",
        ("authority", "detail"),
        "the authority (the first source) is another system than the last successful run's",
    ),
    "command.failed": EventSpec(
        "error",
        ("command", "exit_code", "message"),
        "a command ends with a non-zero exit, and its one line on stderr",
        console=False,
    ),
    "command.said": EventSpec(
        "info",
        ("command", "message"),
        "a result or note a command prints on stderr (`approved 2 master keys ...`)",
        console=False,
    ),
    "lock.stale_cleared": EventSpec(
        "warning", ("path", "stale_pid", "stale_run_id"), "a lock left by a dead run was removed"
    ),
    "run.paused_for_tests": EventSpec(
        "warning", ("phase",), "test hook only (`KEYSYNC_TEST_PAUSE_AT`): the run waits here"
    ),
    "log.file_failed": EventSpec(
        "warning",
        ("path", "reason"),
        "the log file cannot be written (a full disk): file logging stops, the command goes on",
    ),
    "log.event_lost": EventSpec(
        "warning",
        ("worker_pid", "bytes"),
        "a worker died while sending a large event; that one event is lost",
    ),
    "simulation.started": EventSpec(
        "info",
        ("simulation_id", "scenario", "days", "keys_per_system", "seed", "folder"),
        "`keysync simulate` begins a fresh simulation in its own folder",
    ),
    "simulation.day": EventSpec(
        "info",
        ("day", "date", "run_id", "match_rates"),
        "one simulated day was reconciled; its match rate per system",
    ),
    "simulation.alert": EventSpec(
        "warning",
        ("system", "day", "match_rate", "change"),
        "a system's match rate fell by more than `simulation.alert_threshold` in one day",
    ),
    "simulation.recovered": EventSpec(
        "info",
        ("system", "day", "match_rate", "change"),
        "after an alert, the first day the rate is back within the threshold of its level",
    ),
    "simulation.completed": EventSpec(
        "info",
        (
            "simulation_id",
            "scenario",
            "days",
            "alerts",
            "recovered",
            "duration_s",
            "timeline",
            "chart",
        ),
        "the timeline and chart of a simulation are in place",
    ),
    "simulation.restored": EventSpec(
        "info",
        ("folder", "reason"),
        "the previous complete simulation is back in its folder: the new one did not complete",
    ),
}
"""The event catalogue (docs/logging.md lists it). Fields are the ones each event carries
at least, besides ``timestamp``, ``level``, ``event``, ``run_id``, ``pid`` and ``stage``."""
