"""What ``keysync run`` prints at the end: the summary table and where the reports are."""

from __future__ import annotations

import click

from keysync import logs
from keysync.errors import EXIT_DEGRADED, EXIT_DIFF
from keysync.runner import RunResult


class ProgressLine:
    """A one-line progress bar on stderr: bytes read of all sources, rows per system; then
    the step under way (``phase``)."""

    WIDTH = 24

    def __init__(self) -> None:
        self._shown = False

    def update(self, done: int, total: int, rows: dict[str, int]) -> None:
        fraction = done / total if total else 1.0
        filled = int(fraction * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        counts = "  ".join(f"{system} {count:,}" for system, count in rows.items())
        click.echo(f"\r\x1b[Kreading [{bar}] {fraction:4.0%}  {counts}", nl=False, err=True)
        self._shown = True

    def phase(self, what: str) -> None:
        """After the reading: the step under way, so a long one does not look like a hang."""
        click.echo(f"\r\x1b[K{what}...", nl=False, err=True)
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            click.echo("\r\x1b[K", nl=False, err=True)


def final_line(result: RunResult) -> str | None:
    """The run's last line on stderr (a cron mail may hold nothing else): what, why, what to do."""
    if not result.message:
        return None
    line = f"keysync: {result.message}"
    if result.exit_code == EXIT_DEGRADED:
        degraded, _, in_the_others = result.message.partition("; ")  # (see _outcome_message)
        reasons = "; ".join(
            f"{s.system}: {s.unavailable_reason}"
            for s in result.summaries
            if not s.available and s.unavailable_reason
        )
        line = f"keysync: {degraded}" + (f" ({reasons})" if reasons else "")
        down = sum(not s.available for s in result.summaries)
        back = "it is" if down == 1 else "they are"
        line += f"; the reports in {result.output_dir} cover the others: run again once {back} back"
        if in_the_others:
            line += f"; {in_the_others}"
    elif result.exit_code == EXIT_DIFF:
        line += f"; see the reports in {result.output_dir}"
    return line


# What a run did to the registry, in the order a reader asks: the counts of ProvisioningPlan.
_REGISTRY_CHANGES = {
    "proposed": "proposed",
    "approved": "approved",
    "deprecated": "deprecated",
    "resolved": "resolved",
    "unresolved": "unresolved",
    "reappeared": "reappeared",
    "seen_in_changed": "seen_in changed",
}


def registry_line(result: RunResult) -> str:
    """``registry: 1,525 proposed; 1,525 master keys: 1,525 Proposed, ...`` and the next step.

    The table says what the systems hold; this says what the run did about it (until
    now only the log's ``registry.changed`` told) and how many keys wait for a decision."""
    counts = result.registry
    changes = ", ".join(
        f"{counts[name]:,} {said}" for name, said in _REGISTRY_CHANGES.items() if counts.get(name)
    )
    if result.dry_run:
        line = "registry (dry run, nothing saved): " + (
            f"would be {changes}" if changes else "no change"
        )
    else:
        line = f"registry: {changes or 'no change'}"
    if result.statuses:
        by_status = ", ".join(f"{n:,} {status}" for status, n in result.statuses.items())
        total = sum(result.statuses.values())
        line += f"; {total:,} master key{'' if total == 1 else 's'}: {by_status}"
    if result.statuses.get("Proposed") and not result.dry_run:
        line += " (review: keysync registry list --status Proposed)"
    return line


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def print_run_result(result: RunResult) -> None:
    authority = result.summaries[0].system if result.summaries else "A"  # it comes first
    headers = [
        "system",
        "matched",
        f"missing in {authority}",
        "missing from system",
        "duplicates",
        "rejected",
        "match rate",
    ]
    rows = []
    for s in result.summaries:
        if not s.available:
            rejected = "" if s.rows_rejected is None else str(s.rows_rejected)  # all of its rows
            rows.append([s.system, "unavailable", "", "", "", rejected, ""])
            continue
        rate = "" if s.match_rate is None else f"{s.match_rate:.2%}"
        rows.append(
            [
                s.system,
                _cell(s.matched),
                _cell(s.missing_in_a),
                _cell(s.missing_from_system),
                _cell(s.duplicate_keys),
                _cell(s.rows_rejected),
                rate,
            ]
        )
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = "  ".join(
        h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths))
    )
    click.echo(f"run {result.run_id} ({result.mode}{', dry run' if result.dry_run else ''})")
    click.echo(line)
    click.echo("  ".join("-" * w for w in widths))
    for row in rows:
        click.echo(
            "  ".join(
                str(c).ljust(w) if i == 0 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(row, widths))
            )
        )
    if result.registry:
        click.echo(registry_line(result))
    click.echo(f"reports: {result.output_dir}")
    last = final_line(result)
    if last:
        logs.tell_user(last, run_id=result.run_id, exit_code=result.exit_code or None)
