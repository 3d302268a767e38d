"""One reconciliation run, start to finish: the library API behind ``keysync run``.

``run(config, options) -> RunResult`` reads every source through the
pipeline, compares, plans registry changes, writes the reports to a staging
folder, commits all state changes in one transaction, then publishes the
reports. A kill at any point before the commit leaves the state as it was.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from keysync import audit_report, checkpoint, incremental, logs, replay, testhooks
from keysync.actor import os_user
from keysync.checkpoint import CheckpointHeader, CheckpointWriter
from keysync.comparison import (
    DISCREPANCY_KINDS,
    Comparison,
    SystemSummary,
    compare,
    every_row_rejected,
    every_row_rejected_reason,
    found_discrepancies,
    has_discrepancies,
)
from keysync.config import Config
from keysync.errors import (
    EXIT_CANNOT_RUN,
    EXIT_DEGRADED,
    EXIT_DIFF,
    EXIT_INTERRUPTED,
    EXIT_OK,
    STOPS,
    ConfigError,
    Interrupted,
    KeysyncError,
    ResumableError,
    RunError,
    stop_name,
)
from keysync.history import HistoryPlan, plan_history, plan_unchanged
from keysync.lock import RunLock
from keysync.messages import KeyBatch
from keysync.pipeline import Pipeline, PipelineObserver, SourceJob
from keysync.stages.merger import KeyIndex, SystemKeys
from keysync.stages.provisioner import (
    ProvisioningPlan,
    log_committed,
    plan_provisioning,
    unchanged_counts,
    warn_of_taken_names,
)
from keysync.stages.reader import no_source_file
from keysync.stages.reporter import (
    AUDIT_MEANINGS,
    PART,
    PUBLISHING,
    REGISTRY_MEANINGS,
    REGISTRY_RISKY,
    SUMMARY_COLUMNS,
    ReportWriter,
    write_reconciliation_reports,
)
from keysync.state import (
    AUDIT_COLUMNS,
    DB_NAME,
    STATUSES,
    SUCCESSFUL,
    StateStore,
    paused_gc,
    state_problem,
)
from keysync.testhooks import pause_for_tests

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
    fail_on_diff: bool = False  # exit 1 on any kind of discrepancy
    fail_on: tuple[str, ...] = ()  # `--fail-on`: exit 1 on these kinds (DISCREPANCY_KINDS)
    # Called now and then while reading: (bytes done, total bytes, rows read per system).
    on_progress: Callable[[int, int, dict[str, int]], None] | None = None
    # Each step after reading, by name ("planning the registry changes"): at 5 x 1M they
    # take longer than the reading, and a progress bar stopped at 100 % looks hung.
    on_phase: Callable[[str], None] | None = None
    # The `keysync run` command, whose process ends with the run: once the run has
    # committed, its Ctrl-C handling stays till the exit, not the caller's put back (in
    # that instant, the caller's would end a completed run as "interrupted").
    ends_the_process: bool = False
    # What a second Ctrl-C says as it ends the process at once: the way on from there
    # (`simulate` starts over; `run --resume` there would reconcile the user's own inputs).
    stopped_at_once: str = "the last checkpoint is kept: `keysync run --resume` continues it"


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
    registry: dict[str, int] = field(default_factory=dict)  # ProvisioningPlan.counts()
    statuses: dict[str, int] = field(default_factory=dict)  # master keys by status, after
    # Size and SHA-256 of each report as staged, for keysync/replay.py (None: not known).
    report_digests: dict[str, tuple[int, str]] | None = None


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """ISO 8601 UTC with a ``Z``, to the second: ``2026-11-27T02:00:00Z``."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id(moment: datetime) -> str:
    """Sortable and unique: ``20261127T020000Z-3f9a``."""
    return moment.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def refuse_without_inputs(config: Config, requested: list[str] | None) -> None:
    """Refuse a run of which not one source file exists (a first run before ``keysync
    generate``; paths that point elsewhere): said once, before a folder is made or a
    warning given for each file, with the two ways out (exit 3, as for A missing)."""
    systems = select_systems(config, requested)
    if none := no_source_file({s: config.source_path(s) for s in systems}):
        raise KeysyncError(f"the authority {config.authority} is unavailable: {none}")


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
        self.committed = False  # from then on a Ctrl-C is not heeded: the run is done
        self.resumed_at = resumed_at
        self.index = index
        self.total_bytes = total_bytes
        self.on_progress = on_progress
        self._shown = 0.0
        self.rows_applied = 0
        self.pause_at_rows = testhooks.pause_requested("reading")

    def _progress(self) -> None:
        if self.on_progress is None or time.monotonic() - self._shown < 0.1:
            return
        self._shown = time.monotonic()
        done = sum(s.position.offset for s in self.index.systems.values())
        rows = {name: s.rows_read for name, s in self.index.systems.items()}
        self.on_progress(min(done, self.total_bytes), self.total_bytes, rows)

    def announce_resumed(self) -> None:
        """Log ``run.resumed`` once: at the first new batch, or when nothing was left to read."""
        if self.resumed_at is not None:
            logs.get_logger(stage="runner").info(
                "run.resumed",
                resume_s=round(seconds_since_process_start(), 3),
                replay_s=round(self.resumed_at, 3),
            )
            self.resumed_at = None

    def batch_applied(self, batch: KeyBatch) -> None:
        self.announce_resumed()
        self._progress()
        self.checkpoint.add(batch)
        self.rows_applied += batch.rows_read
        if self.pause_at_rows is not None and self.rows_applied >= self.pause_at_rows:
            self.pause_at_rows = None
            self.checkpoint.flush()
            testhooks.pause("reading")

    def source_unavailable(self, system: str, reason: str) -> None:
        self.checkpoint.source_unavailable(system, reason)

    def should_stop(self) -> bool:
        return self.stop_requested


STOPPED_AT_ONCE = "keysync: stopped at once (second interrupt)"


_FINISHING = (
    b"keysync: the run has saved its state and is finishing; an interrupt now changes nothing\n"
)


def _say_now(line: bytes) -> None:
    """``line`` on stderr from a signal handler (no logging, no locks), on a line of its
    own: on a terminal the progress line may be half drawn, so a line break first."""
    os.write(2, (b"\n" if os.isatty(2) else b"") + line)


def _say_finishing(signum: int = 0, frame: object = None) -> None:
    """An interrupt the committed run does not heed: said, so the user is not left waiting
    on a run that seems to ignore them (publishing and tidying take seconds at 5 x 1M)."""
    _say_now(_FINISHING)


@contextmanager
def _stop_on_signals(observer: _RunObserver, options: RunOptions) -> Iterator[None]:
    """First Ctrl-C / SIGTERM: stop at the next clean point. Second: exit at once.

    Once the run has committed, neither is heeded, only said to be, also after the block
    (till :func:`_signals_kept` puts the caller's handlers back): the tidying, the lock's
    release and the freeing of the index must not end as "interrupted" a run that completed.
    In the keysync process (``options.ends_the_process``) they stay till its end: after a first
    one, a second one exits at once also while the run records how it ended and lets go
    of its lock (it was a KeyboardInterrupt there, and a traceback).
    """

    line = f"{STOPPED_AT_ONCE}; {options.stopped_at_once}"

    def handle(signum: int, frame: object) -> None:
        if observer.committed:
            _say_finishing()
            return
        if observer.stop_requested:
            # Frames on disk are whole or cut off by the loader: the checkpoint holds.
            _say_now(f"{line}\n".encode())
            with suppress(Exception):  # the file's record of the exit, if it can
                logs.get_logger(stage="runner").error(
                    "command.failed",
                    command="keysync run",
                    exit_code=EXIT_INTERRUPTED,
                    message=line.removeprefix("keysync: "),
                )
            os._exit(EXIT_INTERRUPTED)
        observer.stop_requested = True

    # A signal ignored by whoever started keysync (`cmd &` in a script) stays ignored.
    heeded = [sig for sig in STOPS if signal.getsignal(sig) is not signal.SIG_IGN]
    previous = {sig: signal.signal(sig, handle) for sig in heeded}
    try:
        yield
    finally:
        if not options.ends_the_process:
            for sig, handler in previous.items():
                signal.signal(sig, _say_finishing if observer.committed else handler)


@contextmanager
def _staging_errors(config: Config) -> Iterator[None]:
    """A write() error names no file: say where, and that the run can be resumed."""
    try:
        yield
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise ResumableError(
            f"cannot write the reports in {config.output_dir}{where}: {exc.strerror or exc}",
            checkpoint.MEND,
        ) from None


@contextmanager
def _signals_kept(options: RunOptions) -> Iterator[None]:
    """The caller's Ctrl-C / SIGTERM handlers, as they were, once ``run`` returns; but
    in a run that ends the process (``options.ends_the_process``: see _stop_on_signals)."""
    previous = {sig: signal.getsignal(sig) for sig in STOPS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None and not options.ends_the_process:
                signal.signal(sig, handler)  # (None: not set from Python, none to put back)


def _rules(config: Config) -> dict[str, Any]:
    """The settings that shape keys and master keys, by their config names (``flags.rules``)."""
    rules = config.key_rules()
    rules["provisioning.strategy"] = config.provisioning.strategy
    rules["provisioning.namespace_separator"] = config.provisioning.namespace_separator
    return rules


_KEYS_CHANGE = (
    "keys may take other forms now (or be rejected): a master key of an old form stops "
    "matching (an Active one is deprecated once unseen for provisioning.deprecate_after_runs "
    "runs, a Proposed one waits for review) and its key is proposed again in the new form; "
    "`keysync registry rekey` carries the approvals over to the new forms"
)
_SHAPE_CHANGE = (
    "new master keys take the new shape and existing ones keep theirs, so a key that has "
    "an entry of the old shape can be proposed again in the new one"
)
_SEPARATOR_CHANGE = (
    "new namespaced master keys take the new separator; existing ones keep their names "
    "and still stand for their system's key"
)


def _changed_flags(
    store: StateStore, run_id: str, name: str, new: dict[str, Any]
) -> tuple[str, dict[str, Any], list[str], str] | None:
    """``new`` against ``flags[name]`` of the last successful run: that run, its values,
    the settings that differ and them listed (``a 1 -> 2, b ...``); None if none differ."""
    before = store.flags_before(run_id, name)
    if before is None:
        return None
    previous_run, old = before
    changed = sorted(setting for setting in old.keys() & new.keys() if old[setting] != new[setting])
    if not changed:
        return None
    listed = ", ".join(f"{n} {json.dumps(old[n])} -> {json.dumps(new[n])}" for n in changed)
    return previous_run, old, changed, listed


def _rules_change(store: StateStore, run_id: str, config: Config) -> str:
    """What changed in ``_rules`` since the last successful run, as one line ("" if nothing)."""
    new = _rules(config)
    found = _changed_flags(store, run_id, "rules", new)
    if found is None:
        return ""
    previous_run, _, changed, listed = found
    effects = [_KEYS_CHANGE] if any(not n.startswith("provisioning.") for n in changed) else []
    if "provisioning.strategy" in changed:
        effects.append(_SHAPE_CHANGE)
    elif (
        "provisioning.namespace_separator" in changed
        and new["provisioning.strategy"] == "namespaced"
    ):
        effects.append(_SEPARATOR_CHANGE)
    return f"the rules changed since run {previous_run}: " + "; ".join([listed, *effects])


def _settings(config: Config) -> dict[str, Any]:
    """The other settings that decide registry changes (``flags.settings``): which systems
    are configured (one taken out holds nothing in the registry), the column each one's
    keys are read from (another gives every key of it another value) and the lifecycle's."""
    return {
        # The authority first, then the peers by name: their order in the file means nothing.
        "sources": ",".join([config.authority, *sorted(set(config.sources) - {config.authority})]),
        **{
            f"sources.{name}.key_column": source.key_column
            for name, source in sorted(config.sources.items())
        },
        "provisioning.auto_approve": config.provisioning.auto_approve,
        "provisioning.deprecate_after_runs": config.provisioning.deprecate_after_runs,
    }


def _settings_change(
    store: StateStore, run_id: str, config: Config, systems: Sequence[str]
) -> tuple[str, bool]:
    """What changed in ``_settings`` since the last successful run, as one line ("" if
    nothing): the audit trail's answer to "why were these keys deprecated now"; and
    whether the authority is another system. ``systems`` are the ones this run reads."""
    new = _settings(config)
    found = _changed_flags(store, run_id, "settings", new)
    if found is None:
        return "", False
    previous_run, old, changed, listed = found
    effects, authority_changed = [], False
    if "sources" in changed:
        was, now = old["sources"].split(","), new["sources"].split(",")
        if gone := [name for name in was if name not in now]:
            effects.append(
                f"{', '.join(gone)} taken out of the config: it holds nothing in the registry "
                "from this run on, and a master key seen in no other system counts towards "
                "provisioning.deprecate_after_runs"
            )
        added = [name for name in now if name not in was]
        if read := [name for name in added if name in systems]:
            effects.append(f"{', '.join(read)} added to the config: read from this run on")
        if unread := [name for name in added if name not in systems]:
            effects.append(
                f"{', '.join(unread)} added to the config: not read by this run "
                "(--systems, or a run resumed that began without it)"
            )
        if authority_changed := was[0] != now[0]:
            effects.append(f"the authority (the first source) is {now[0]}, was {was[0]}")
    if columns := [n.split(".")[1] for n in changed if n.endswith(".key_column")]:
        effects.append(
            f"{', '.join(columns)} read from another key column: its keys are those of the "
            "new column, and a master key of the old column's keys seen in no other system "
            "counts towards provisioning.deprecate_after_runs"
        )
    line = f"the settings changed since run {previous_run}: " + "; ".join([listed, *effects])
    return line, authority_changed


# What to fix for a source whose every row was rejected, by its commonest error_type.
_MENDS = {
    "empty-key": "fix sources.{0}.key_column or the normalize rules (`keysync normalize KEY` "
    "shows what they make of a key)",
    "encoding": "set sources.{0}.encoding to the export's encoding",
    "too-long": "raise processing.max_key_length, or fix sources.{0}.key_column",
    "extra-cell": "fix the export, or sources.{0}.delimiter",
    "missing-cell": "fix the export, or sources.{0}.delimiter",
    "bad-quoting": "fix the export's quoting",
    "nul-byte": "fix the export",
}


def _mend_for_rejected(keys: SystemKeys, system: str) -> str:
    """What to fix, for the kind of rejection most of ``system``'s rows had."""
    commonest = Counter(row.error_type for row in keys.rejected).most_common(1)[0][0]
    return _MENDS.get(commonest, "fix the export").format(system)


def _latest_checkpoint(config: Config) -> Path | None:
    folders = checkpoint.interrupted_runs(config.checkpoint_dir)
    return folders[0] if folders else None


def _write_audit_log(
    writer: ReportWriter, store: StateStore, planned: list[tuple[Any, ...]] | None = None
) -> None:
    """audit_log.csv: every recorded event; in a dry run (``planned`` given, even empty)
    also what would be recorded, and the header says so.

    Streamed from the database: the trail grows with every run, memory must not.
    When the previous file is verifiably the rendering of the events recorded up
    to some seq (``keysync.audit_report``), its rows are copied as bytes and only
    the events recorded since are rendered: the same bytes, in time proportional
    to the new events. Otherwise every event is rendered.
    """
    description = audit_report.DESCRIPTION
    if planned is not None:
        description += audit_report.DRY_RUN_NOTE
    planned = planned or []
    log = audit_report.AuditLog(writer, store)
    report = writer.open(
        "audit_log.csv",
        {column: AUDIT_MEANINGS[column] for column in AUDIT_COLUMNS},
        row_count=log.total + len(planned),
        description=description,
    )
    log.copy_previous(report)
    audit_report.render_rows(
        report, store.audit_rows(after_seq=log.after_seq, seq_as_text=True), planned
    )
    report.close()
    log.finish(report, planned=planned)


def publish_leftovers(config: Config, store: StateStore) -> None:
    """Finish what a run killed after its commit left behind: publish its staged reports.

    Staged reports of a run that never committed describe nothing real: removed.
    """
    output_dir = config.output_dir
    if not output_dir.is_dir():
        return
    for staging in sorted(output_dir.glob(".staging-*")):
        run_id = staging.name.removeprefix(".staging-")
        record = store.run(run_id)
        writer = ReportWriter(output_dir, run_id, iso(utc_now()))
        if record is None or record.outcome not in SUCCESSFUL:
            writer.discard()
            continue
        # Staged reports are whole once they lose their ".part" (a dry run's audit log, with
        # the events it would record, exists only there); a missing audit log is rendered.
        writer.written = sorted(
            p.name for p in staging.iterdir() if not p.name.endswith((PART, ".tmp"))
        )
        try:
            if audit_report.NAME not in writer.written:
                _write_audit_log(writer, store)
            writer.publish()
        except OSError as exc:  # still no room: the same advice as when the run stopped
            raise _unpublished(run_id, config, exc) from None
        logs.get_logger(stage="runner").warning(
            "report.recovered", run_id=run_id, detail="published the reports of a committed run"
        )
    # Killed after its last rename: the marker alone is left.
    (output_dir / PUBLISHING).unlink(missing_ok=True)


def _out_of_room(exc: BaseException) -> bool:
    """SQLite's FULL or IOERR inside a run: the disk under the state filled up (an IOERR
    is what a full disk gives when SQLite cannot grow its -shm file)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)  # from Python 3.11 on
    if isinstance(code, int):
        return code & 0xFF in (10, 13)
    return any(words in str(exc).lower() for words in ("disk is full", "disk i/o error"))


def _unpublished(run_id: str, config: Config, exc: OSError) -> ResumableError:
    return ResumableError(
        f"run {run_id} is committed, but its reports could not all be put in place in "
        f"{config.output_dir}: {exc.strerror or exc}",
        "make room, then `keysync run --resume` puts them in place",
    )


def _committed(store: StateStore, run_id: str) -> bool:
    """Whether ``run_id`` has committed; True when the state cannot tell (keep its reports)."""
    try:
        record = store.run(run_id)
    except sqlite3.Error:
        return True
    return record is not None and record.outcome in SUCCESSFUL


def _finished_run(config: Config, store: StateStore, folder: Path) -> RunResult | None:
    """The result of the run ``folder`` checkpoints, if it was killed after its commit.

    Such a run lacked only the renames of its reports, which ``publish_leftovers``
    has just done: resuming it means that, and no second reconciliation (which
    would count one more run towards ``deprecate_after_runs``).
    """
    record = store.run(folder.name)
    if record is None or record.outcome not in SUCCESSFUL or record.seq != store.max_seq():
        return None  # not committed; or a later run (a dry one too) has written the reports
    checkpoint.remove(folder)
    if not record.dry_run:
        _supersede_older_checkpoints(config, store, record.run_id)
    logs.get_logger(stage="runner").info(
        "run.already_committed",
        resumed_run_id=record.run_id,
        detail="it was killed after its commit; its reports are now in place: nothing to redo",
    )
    summaries = sorted(  # as the comparison orders them (the JSON keeps them by name)
        (SystemSummary(**counts) for counts in record.counts.get("systems", {}).values()),
        key=lambda s: (s.system != config.authority, s.system),
    )
    # As they were when it committed: a change by hand since must not show as this run's.
    recorded = record.counts.get("statuses")
    statuses = (
        {status: int(recorded.get(status, 0)) for status in STATUSES}  # stored sorted by name
        if isinstance(recorded, dict)
        else store.status_counts()
    )
    exit_code = EXIT_OK if record.exit_code is None else record.exit_code
    return RunResult(
        run_id=record.run_id,
        exit_code=exit_code,
        mode=record.mode,
        summaries=summaries,
        output_dir=config.output_dir,
        message=record.message,  # as recorded when it ended (with --resume's options too)
        dry_run=record.dry_run,
        discrepancies=has_discrepancies(summaries),
        registry=record.counts.get("registry", {}),
        statuses={} if record.dry_run else statuses,
    )


def _failing_kinds(fail_on_diff: bool, fail_on: tuple[str, ...]) -> tuple[str, ...]:
    """The kinds of discrepancy that make a run exit 1: all of them with ``--fail-on-diff``."""
    return tuple(DISCREPANCY_KINDS) if fail_on_diff else fail_on


def _outcome_message(
    summaries: list[SystemSummary], exit_code: int, fail_on_diff: bool, fail_on: tuple[str, ...]
) -> str:
    """The final line of a run that did not end with exit 0.

    A degraded run (exit 4, which comes before 1) also says the discrepancies the
    others have that ``--fail-on-diff`` / ``--fail-on`` asks about: a CI gate would
    otherwise not learn that they failed it too."""
    found = [  # what a CI log should say without opening the reports
        f"{n:,} {DISCREPANCY_KINDS[kind][1]}{'' if n == 1 else 's'}"
        for kind, n in found_discrepancies(summaries, _failing_kinds(fail_on_diff, fail_on)).items()
    ]
    option = "--fail-on-diff" if fail_on_diff else f"--fail-on {','.join(fail_on)}"
    gated = f"discrepancies found ({option}): {', '.join(found)} (per system)"
    missing = [s.system for s in summaries if not s.available]
    if missing:
        degraded = f"degraded: {', '.join(missing)} unavailable, not compared"
        return f"{degraded}; in the others, {gated}" if found else degraded
    return gated if exit_code == EXIT_DIFF else ""


def _supersede_older_checkpoints(config: Config, store: StateStore, run_id: str) -> None:
    """``_remove_superseded_checkpoints``, after a commit: a failure is only a warning."""
    try:
        _remove_superseded_checkpoints(config, store, run_id)
    except (OSError, sqlite3.Error) as exc:  # the run is done: only say it
        logs.get_logger(stage="runner").warning(
            "checkpoint.superseded",
            path=str(config.checkpoint_dir),
            reason=f"older checkpoints could not be removed: {exc}",
        )


def _remove_superseded_checkpoints(config: Config, store: StateStore, run_id: str) -> None:
    """Checkpoints of runs begun before ``run_id``, which committed: nothing to resume now.

    Folders that never got their header go too: nothing can resume them, and no other
    run is writing one (this run holds the lock).
    """
    for folder in checkpoint.never_begun(config.checkpoint_dir):
        checkpoint.remove(folder)
    seq = store.run_seq(run_id)
    for folder in checkpoint.interrupted_runs(config.checkpoint_dir):
        record = store.run(folder.name)
        if record is None or record.seq >= seq:
            continue
        if record.outcome in SUCCESSFUL:  # killed after its commit: it was not interrupted
            checkpoint.remove(folder)
        else:  # a dry run's too: see below
            _drop_superseded(folder, f"run {run_id}")


def _drop_superseded(folder: Path, by: str) -> None:
    """Remove a checkpoint that newer committed state makes useless, and say so.

    Resuming it would commit older inputs over that state (and they have usually
    changed anyway, so ``--resume`` would refuse on every later run). A killed dry
    run's checkpoint goes too: it commits nothing, but its inputs have usually
    changed as well, and keeping it would leave ``--resume`` refusing for good.
    """
    logs.get_logger(stage="runner").warning(
        "checkpoint.superseded",
        path=str(folder),
        reason=f"run {folder.name} did not finish and {by} completed since",
    )
    checkpoint.remove(folder)


def _usable_checkpoint(folder: Path, store: StateStore) -> bool:
    """Whether the checkpoint in ``folder`` can be resumed; if not, say why and remove it.

    A checkpoint whose run already committed (killed after the commit) has nothing
    left to do, nor has one that a later committed run superseded; one that cannot
    be read, or whose run the database does not know, cannot be trusted: the run
    starts afresh rather than failing.
    """
    record = store.run(folder.name)
    if record is not None and record.outcome in SUCCESSFUL:
        checkpoint.remove(folder)
        return False
    if record is not None and store.committed_after(record.seq):  # left by an older keysync
        _drop_superseded(folder, "a later run")
        return False
    if record is None:  # another project's (a shared paths.checkpoints): not ours to remove
        logs.get_logger(stage="runner").warning(
            "checkpoint.unusable",
            path=str(folder),
            reason=f"the database has no run {folder.name}: left as it is",
        )
        return False
    try:
        checkpoint.read_header(folder)
    except RunError as exc:
        logs.get_logger(stage="runner").warning(
            "checkpoint.unusable", path=str(folder), reason=str(exc)
        )
        checkpoint.remove(folder)
        return False
    return True


def run(config: Config, options: RunOptions | None = None) -> RunResult:
    """Reconcile the configured sources; see SPEC.md "Commands" for the contract."""
    options = options or RunOptions()
    select_systems(config, options.systems)  # a usage error (exit 2) before anything changes
    started = utc_now()
    resume_dir = _latest_checkpoint(config) if options.resume else None
    run_id = resume_dir.name if resume_dir is not None else new_run_id(started)
    log = logs.get_logger(stage="runner")
    with _signals_kept(options), RunLock.acquire(config.data_dir, run_id):
        store = StateStore.open(config.data_dir / DB_NAME, output_dir=config.output_dir)
        try:
            publish_leftovers(config, store)
            finished = _finished_run(config, store, resume_dir) if resume_dir else None
            if finished is not None:
                return finished
            if options.regenerate_keys is not None:
                # Only under the lock: another run may be reading the very files it rewrites;
                # and only once the state can be written: a refused run rewrites nothing.
                from keysync.mockdata import generate

                store.check_writable()

                made = generate(config, keys=options.regenerate_keys)
                log.info(
                    "inputs.regenerated",
                    run_id=run_id,
                    keys_per_system=made.keys_per_system,
                    seed=made.seed,
                    scenario=made.scenario,
                    folder=str(made.out_dir),
                )
                if made.stopped_by is not None:  # came as the new inputs went into place
                    raise KeysyncError(
                        f"{stop_name(made.stopped_by)} stopped `keysync run --keys` once the new "
                        f"mock inputs were in place ({made.out_dir}); no run started: "
                        "`keysync run` reconciles them",
                        EXIT_INTERRUPTED,
                    )
            if resume_dir is not None and not _usable_checkpoint(resume_dir, store):
                resume_dir, run_id = None, new_run_id(started)
            if options.resume and resume_dir is None:
                log.warning(
                    "run.nothing_to_resume",
                    run_id=run_id,  # the run it goes on as, as its every later line says
                    detail="no interrupted run to resume; running normally",
                )
            # No cyclic GC during the run: it allocates tens of millions of objects and
            # makes no cycles that matter, and each automatic full collection walks the
            # whole multi-million-object heap (checkpoint replay at 5 x 1M: 2.4 -> 1.1 s
            # to decode the frames). The index is freed by reference counting anyway.
            with paused_gc():
                return _Run(config, options, store, run_id, started, resume_dir).execute()
        finally:
            store.close()


class _Run:
    """One run's phases: read (or resume), compare, plan, report, commit, publish."""

    def __init__(
        self,
        config: Config,
        options: RunOptions,
        store: StateStore,
        run_id: str,
        started: datetime,
        resume_dir: Path | None,
    ) -> None:
        self.config = config
        self.options = options
        self.store = store
        self.run_id = run_id
        self.started = started
        self.clock = time.monotonic()
        self.read_s = 0.0
        self.log = logs.get_logger(stage="runner")
        self.resumed = resume_dir is not None
        if resume_dir is not None:
            restored = checkpoint.load_verified(resume_dir, config)
            if restored.torn_tail:
                self.log.warning(
                    "checkpoint.torn",
                    run_id=run_id,
                    frames=restored.frames,
                    detail="the last checkpoint was cut short; continuing from the one before",
                )
            self.header = restored.header
            self.index = restored.index
            self.unavailable = dict(restored.unavailable)
            self.mode = restored.header.mode
            # The run continues as it was started, whatever this command line says.
            self.options.dry_run = restored.header.flags.get("dry_run", False)
            self.options.auto_approve = restored.header.flags.get("auto_approve", False)
            # It only sets the exit code: asked for when the run began, or now.
            self.options.fail_on_diff |= restored.header.flags.get("fail_on_diff", False)
            self.options.fail_on = tuple(
                kind
                for kind in DISCREPANCY_KINDS
                if kind in self.options.fail_on or kind in restored.header.fail_on
            )
            self.writer = CheckpointWriter(
                resume_dir, None, config.processing.checkpoint_interval, restored.frames
            )
            # The config may have gained a peer since (one taken out is refused): the run
            # commits under the config of now, so its record must say so too.
            store.resume_run(run_id, flags={"rules": _rules(config), "settings": _settings(config)})
            return
        systems = select_systems(config, options.systems)
        self.mode = options.mode or config.processing.mode
        self.header = CheckpointHeader(
            format=checkpoint.FORMAT_VERSION,
            run_id=run_id,
            created_at=iso(started),
            settings_hash=checkpoint.settings_hash(config, systems),
            systems=systems,
            mode=self.mode,
            flags={
                "dry_run": options.dry_run,
                "auto_approve": options.auto_approve,
                "fail_on_diff": options.fail_on_diff,
            },
            fail_on=list(options.fail_on),
            inputs=[checkpoint.fingerprint(s, config.source_path(s)) for s in systems],
            provisioning=checkpoint.provisioning_settings(config),
            shaping=checkpoint.shaping_settings(config, systems),
        )
        self.index = KeyIndex(systems)
        self.unavailable = {}
        self.writer = CheckpointWriter(
            config.checkpoint_dir / run_id, self.header, config.processing.checkpoint_interval
        )
        try:
            pause_for_tests("recording")  # the checkpoint begun, the run not yet recorded
            store.begin_run(run_id, started, self.mode, self._flags(), dry_run=options.dry_run)
        except BaseException:  # a full disk under the state: no run, so no checkpoint of one
            self.writer.close()
            checkpoint.remove(self.writer.directory)
            raise

    @property
    def systems(self) -> list[str]:
        return self.header.systems

    def _flags(self) -> dict[str, Any]:
        """How the run was asked to act, as ``keysync runs`` and summary.json show it.

        ``auto_approve`` is whether the run approves what it proposes, by
        ``--auto-approve`` or by ``provisioning.auto_approve``: a reader of the record
        asks what the run was allowed to do, not which of the two said so (the audit
        events name that).
        """
        options = self.options
        return {
            "dry_run": options.dry_run,
            "auto_approve": options.auto_approve or self.config.provisioning.auto_approve,
            "fail_on_diff": options.fail_on_diff,
            "fail_on": list(options.fail_on),
            "resume": self.resumed,
            "keys": options.regenerate_keys,  # `--keys N`: the inputs were mock data made now
            "user": os_user(),  # who ran it: an --auto-approve run approves in their name
            "systems": ",".join(self.systems),
            "rules": _rules(self.config),  # to notice a change of them (rules.changed)
            "settings": _settings(self.config),  # and of these (settings.changed)
        }

    def execute(self) -> RunResult:
        logs.bind_run(self.run_id)
        # Incremental mode (keysync/incremental.py): snapshots restore sources and are renewed.
        self.snapshots = incremental.Snapshots(
            self.config, self.run_id, save=not self.options.dry_run
        )
        observer = _RunObserver(
            self.writer,
            time.monotonic() - self.clock if self.resumed else None,
            self.index,
            sum(f.size for f in self.header.inputs),
            self.options.on_progress,
        )
        try:
            with _stop_on_signals(observer, self.options):
                self.log.info(
                    "run.started",
                    mode=self.mode,
                    systems=self.systems,
                    dry_run=self.options.dry_run,
                    auto_approve=self._flags()["auto_approve"],
                    resumed=self.resumed,
                )
                last = self._last_run_reusable()
                if last is not None:
                    result = self._reuse_reports(last, observer)
                else:
                    comparison = self._read_and_compare(observer)
                    result = self._report_and_commit(comparison, observer)
                # Committed and published; under the run's handlers still, so that no
                # KeyboardInterrupt leaves this tidying half done, saying "interrupted".
                pause_for_tests("tidying")
                self.snapshots.publish()  # incremental: only after the commit
                self._record_reports(result, last)
                self.writer.close()
                checkpoint.remove(self.writer.directory)
                if not self.options.dry_run:
                    _supersede_older_checkpoints(self.config, self.store, self.run_id)
                self.log.info(
                    "run.completed",
                    exit_code=result.exit_code,
                    duration_s=result.durations["total_s"],
                    discrepancies=result.discrepancies,
                    **{f"{s.system}_matched": s.matched for s in result.summaries if s.available},
                )
            return result
        except Interrupted:
            self.writer.flush()
            self.writer.close()
            message = f"run {self.run_id} interrupted; {checkpoint.KEPT}"
            self.store.end_run(
                self.run_id, outcome="interrupted", message=message, exit_code=EXIT_INTERRUPTED
            )
            self.log.warning(
                "run.interrupted", checkpoint=str(self.writer.directory), frames=self.writer.frames
            )
            raise Interrupted(message) from None
        except RunError as exc:
            self.writer.close()
            if not isinstance(exc, ResumableError):  # a full disk: the rows read are kept
                checkpoint.remove(self.writer.directory)
            # A run can fail only before its commit; after it, only its reports can.
            committed = isinstance(exc, ResumableError) and _committed(self.store, self.run_id)
            self.log.error("run.unpublished" if committed else "run.failed", reason=str(exc))
            self._record_failure(str(exc), EXIT_CANNOT_RUN)
            raise
        except Exception as exc:
            # A bug, or the system refused (a disk, a permission): keep the checkpoint, which
            # `--resume` continues once that is mended, and log first: the state may be what
            # cannot be written.
            self.writer.close()
            self.log.exception("run.failed", reason=repr(exc))
            if _out_of_room(exc):  # the checkpoint is kept: say so, as for a full output/
                resumable = ResumableError(
                    f"cannot write the state database {self.store.path} ({exc})",
                    checkpoint.MEND,
                )
                self._record_failure(str(resumable), EXIT_CANNOT_RUN)
                raise resumable from None
            foreseen = isinstance(exc, OSError) or (  # the CLI says these in one line, exit 3
                isinstance(exc, sqlite3.DatabaseError) and state_problem(exc) is not None
            )
            self._record_failure(
                f"{type(exc).__name__}: {exc}", EXIT_CANNOT_RUN if foreseen else None
            )
            raise
        finally:
            self.snapshots.discard()  # incremental: a run that did not commit leaves none
            logs.unbind_run()

    def _record_failure(self, message: str, exit_code: int | None) -> None:
        """Mark the run failed, if the state can still be written (its disk may be full)."""
        try:
            self.store.end_run(self.run_id, outcome="failed", message=message, exit_code=exit_code)
        except sqlite3.Error as also:
            self.log.error("run.failed", reason=f"the run could not be recorded: {also!r}")

    def _read_and_compare(self, observer: _RunObserver) -> Comparison:
        config = self.config
        stalled = _stalled_system(config, self.systems)
        restored: set[str] = set()
        if self.mode == "incremental":  # keysync/incremental.py: sources not yet in the index
            untouched = [
                s
                for s in self.systems
                if s not in self.unavailable and s != stalled and self.index[s].rows_read == 0
            ]
            restored = self.snapshots.restore(self.index, untouched, self.store)
        jobs = [
            SourceJob(
                s,
                config.source_path(s),
                config.sources[s],
                position=self.index[s].position,
                stall=(s == stalled),
            )
            for s in self.systems
            if s not in self.unavailable and s not in restored
        ]
        pipeline = Pipeline(config, jobs, index=self.index, run_id=self.run_id, observer=observer)
        result = pipeline.run()
        observer.announce_resumed()
        self.writer.flush()
        self.read_s = time.monotonic() - self.clock
        unavailable = {**self.unavailable, **result.unavailable}
        all_rejected = [
            s for s in self.systems if s not in unavailable and every_row_rejected(self.index[s])
        ]
        for system in all_rejected:
            reason = every_row_rejected_reason(config.source_path(system), self.index[system])
            unavailable[system] = reason
            self.log.warning("source.unavailable", system=system, reason=reason)
        authority = config.authority
        if authority in unavailable:
            # Other reasons say what to do; this one's rows reach no report (nothing is).
            mend = (
                f"; {_mend_for_rejected(self.index[authority], authority)}, then run again"
                if authority in all_rejected
                else ""
            )
            raise RunError(
                f"the authority {authority} is unavailable: {unavailable[authority]}{mend}"
            )
        peers = [s for s in self.systems if s != authority]
        if all(p in unavailable for p in peers):
            reasons = "; ".join(f"{p}: {unavailable[p]}" for p in peers)
            raise RunError(f"no peer of {authority} is available ({reasons})")
        self.snapshots.prepare(self.index, unavailable, self.header.inputs)  # incremental
        self._phase("comparing")
        return compare(self.index, authority, unavailable, all_rejected)

    def _phase(self, what: str) -> None:
        if self.options.on_phase is not None:
            self.options.on_phase(what)

    def _report_and_commit(self, comparison: Comparison, observer: _RunObserver) -> RunResult:
        config, options, store = self.config, self.options, self.store
        now = utc_now()
        self._phase("planning the registry changes")
        plan = plan_provisioning(
            store,
            config,
            comparison,
            run_id=self.run_id,
            now=now,
            auto_approve=options.auto_approve,
            dry_run=options.dry_run,
        )
        warn_of_taken_names(plan)
        changed = _rules_change(store, self.run_id, config)
        if changed:
            self.log.warning("rules.changed", detail=changed)
            plan.change_events.insert(0, (plan.now, self.run_id, "rules.changed", "", "", changed))
        settings, new_authority = _settings_change(store, self.run_id, config, self.systems)
        if settings:
            self.log.info("settings.changed", detail=settings)
            if new_authority:
                self.log.warning(  # said on the console: the line above is long and routine
                    "authority.changed",
                    authority=config.authority,
                    detail=f"{config.authority} is the authority now, as the first source in "
                    "the config: every key is compared with its keys from this run on; if "
                    "that is not meant, put the authority first under sources",
                )
            plan.change_events.insert(
                0, (plan.now, self.run_id, "settings.changed", "", "", settings)
            )
        history = plan_history(store, comparison, self.run_id, now)
        writer = self._report_writer(now)
        return self._commit_and_publish(
            writer,
            lambda: self._stage_reports(writer, comparison, plan, history, now),
            observer,
            plan,
            history,
        )

    def _report_writer(self, now: datetime) -> ReportWriter:
        self.config.output_dir.mkdir(parents=True, exist_ok=True)
        return ReportWriter(self.config.output_dir, self.run_id, iso(now))

    def _commit_and_publish(
        self,
        writer: ReportWriter,
        stage_reports: Callable[[], RunResult],
        observer: _RunObserver,
        plan: ProvisioningPlan | None,
        history: HistoryPlan,
    ) -> RunResult:
        """Stage the reports, commit the run's state, write the audit log, publish."""
        config, options, store = self.config, self.options, self.store
        try:  # until the commit, staged reports describe nothing: none is left behind
            self._phase("writing the reports")
            result = stage_reports()
            writer.sync()  # their names too: after a power cut, a committed run's are whole
            pause_for_tests("reporting")
            if observer.should_stop():
                raise Interrupted("interrupted")
            pause_for_tests("committing")
            self._phase("saving the state")
            store.commit_run(
                self.run_id,
                ended_at=utc_now(),
                outcome="degraded" if result.exit_code == EXIT_DEGRADED else "completed",
                exit_code=result.exit_code,
                counts={
                    "systems": {s.system: dataclasses.asdict(s) for s in result.summaries},
                    "statuses": result.statuses,
                    "registry": result.registry,  # (with a plan, commit_run takes its counts)
                },
                plan=plan,
                history=history,
                dry_run=options.dry_run,
                message=result.message,  # a degraded run names the systems it missed
            )
            # From here a Ctrl-C is not heeded (the run is done), nor a second one an exit
            # that would offer to resume it: what is left is logging what changed (a line
            # a key: seconds after a wave of deprecations), publishing and tidying.
            observer.committed = True
            if observer.stop_requested:  # it came while the state was being saved
                _say_finishing()
            if plan is not None:
                log_committed(plan)
        except BaseException:
            if not _committed(store, self.run_id):  # (an exception after the COMMIT: kept)
                writer.discard()
            raise
        # In a dry run nothing was recorded: show what would have been, after the real events.
        # (Only then: building these rows costs ~0.17 s at 5 x 1M.)
        planned = None
        if options.dry_run and plan is not None:
            planned = [(t, r, "", e, s, k, d) for t, r, e, s, k, d in plan.events]
        try:
            self._phase("writing the audit log")
            _write_audit_log(writer, store, planned)
            writer.sync()
            if not options.dry_run:  # what the next incremental run may reuse
                result.report_digests = replay.digests(writer.staging, writer.written)
            pause_for_tests("publishing")
            result.reports = writer.publish()
        except OSError as exc:
            raise _unpublished(self.run_id, config, exc) from None
        result.durations = self._durations()
        return result

    def _durations(self) -> dict[str, float]:
        """Seconds spent reading, and in all so far (the clock is read at each call)."""
        return {
            "read_s": round(self.read_s, 3),
            "total_s": round(time.monotonic() - self.clock, 3),
        }

    def _stage_reports(
        self,
        writer: ReportWriter,
        comparison: Comparison,
        plan: ProvisioningPlan,
        history: HistoryPlan,
        now: datetime,
    ) -> RunResult:
        """Write every report but the audit log into the staging folder; the run's result."""
        config = self.config
        with _staging_errors(config):
            files = {s: config.source_path(s) for s in self.systems}
            write_reconciliation_reports(writer, comparison, files, plan, history)
            registry_rows = list(plan.registry_rows())
            registry = writer.open(
                "master_key_registry.csv",
                {column: REGISTRY_MEANINGS[column] for column in plan.registry_columns()},
                row_count=len(registry_rows),
                description="every master key after this run"
                + (
                    " (dry run: shows what would change; nothing was saved)"
                    if self.options.dry_run
                    else ""
                ),
            )
            registry.rows(registry_rows, risky=REGISTRY_RISKY)
            registry.close()
            result = self._outcome(list(comparison.summaries.values()))
            result.registry, result.statuses = plan.counts(), plan.status_counts()
            writer.write_json("summary.json", self._summary_json(result, now))
        writer.check_targets([*writer.written, audit_report.NAME])
        return result

    # ------------------------------------------------ nothing changed (keysync/replay.py)

    def _last_run_reusable(self) -> replay.LastRun | None:
        """The last run's record, when this run would decide nothing it did not."""
        if self.mode != "incremental" or self.resumed or self.options.dry_run:
            return None
        if self.unavailable or _stalled_system(self.config, self.systems) is not None:
            return None
        last = replay.reusable(self.config, self.store, self.systems)
        if isinstance(last, str):
            self.log.debug("incremental.not_reused", reason=last)
            return None
        return last

    def _reuse_reports(self, last: replay.LastRun, observer: _RunObserver) -> RunResult:
        """Record this run as one that found what run ``last`` found, with its reports."""
        previous = self.store.run(last.run_id)
        assert previous is not None  # replay.reusable found it
        self.log.info(
            "incremental.reused",
            run=last.run_id,
            systems=self.systems,
            detail=f"no source, setting or registry entry changed since run {last.run_id}: "
            "its reports are this run's, nothing is compared",
        )
        self.read_s = time.monotonic() - self.clock
        now = utc_now()
        summaries = [SystemSummary(**row) for row in previous.counts["systems"].values()]
        history = plan_unchanged(self.store, self.run_id, now, self.systems)
        writer = self._report_writer(now)

        def stage_reports() -> RunResult:
            result = self._outcome(summaries)
            result.registry = unchanged_counts(previous.counts["registry"]["registry_total"])
            result.statuses = {status: previous.counts["statuses"][status] for status in STATUSES}
            with _staging_errors(self.config):
                for name in last.reports:
                    writer.restage(name, self.config.output_dir / name, last.run_id)
                writer.write_json("summary.json", self._summary_json(result, now))
            writer.check_targets([*writer.written, audit_report.NAME])
            return result

        return self._commit_and_publish(writer, stage_reports, observer, None, history)

    def _record_reports(self, result: RunResult, reused: replay.LastRun | None) -> None:
        """Leave what the next incremental run needs to reuse these reports (a cache)."""
        if self.options.dry_run:
            return
        inputs = reused.inputs if reused else self.snapshots.digests(self.systems)
        reports = result.report_digests
        if result.exit_code == EXIT_DEGRADED or inputs is None or reports is None:
            replay.forget(self.config)
            return
        if why := replay.record(self.config, self.run_id, inputs, reports):
            self.log.warning("incremental.record_skipped", reason=why)

    def _outcome(self, summaries: list[SystemSummary]) -> RunResult:
        discrepancies = has_discrepancies(summaries)
        options = self.options
        gate = _failing_kinds(options.fail_on_diff, options.fail_on)
        if not all(s.available for s in summaries):
            exit_code = EXIT_DEGRADED
        elif found_discrepancies(summaries, gate):
            exit_code = EXIT_DIFF
        else:
            exit_code = EXIT_OK
        message = _outcome_message(summaries, exit_code, options.fail_on_diff, options.fail_on)
        return RunResult(
            run_id=self.run_id,
            exit_code=exit_code,
            mode=self.mode,
            summaries=summaries,
            output_dir=self.config.output_dir,
            message=message,
            dry_run=self.options.dry_run,
            discrepancies=discrepancies,
        )

    def _summary_json(self, result: RunResult, now: datetime) -> dict[str, Any]:
        columns = list(SUMMARY_COLUMNS)
        return {
            "run_id": self.run_id,
            "mode": self.mode,
            "started_at": iso(self.started),
            "finished_at": iso(now),
            "flags": self._flags(),
            "resumed": self.resumed,
            "durations": self._durations(),
            # The summary table's columns as JSON values: numbers, booleans, null when the
            # system was not read (the CSV has empty cells there).
            "systems": [
                {
                    **{column: getattr(s, column) for column in columns},
                    "reason": s.unavailable_reason,
                }
                for s in result.summaries
            ],
            "discrepancies": result.discrepancies,
            "registry": {**result.registry, "by_status": result.statuses},
            "exit_code": result.exit_code,
            "message": result.message,
        }
