"""Commands over the state store: ``registry``, ``runs``, ``audit``, ``history``.

Thin shells over ``keysync.state`` / ``keysync.history``: parse, call, print.
Reading commands never create the database: with no runs yet they say so on
stderr and print nothing (exit 0), because "nothing recorded" is a valid
answer. Commands about one key (``registry show/approve/deprecate``,
``history``) need a database (exit 3 without one) and a known key (exit 2
naming the key otherwise). ``approve``/``deprecate`` take the run lock, so
they wait for no one and never race a run: while a run holds it they exit 3.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import errno
import io
import json
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
import unicodedata
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import click

from keysync.actor import os_user
from keysync.config import Config
from keysync.errors import (
    EXIT_CANNOT_RUN,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    KeysyncError,
    file_in_the_way,
    stop_name,
    stops_ignored,
)
from keysync.leftovers import pid_alive, remove_dead_writers
from keysync.rekey import Rekey
from keysync.state import (
    AUDIT_COLUMNS,
    AUDIT_EVENTS,
    DB_NAME,
    REGISTRY_COLUMNS,
    STATUSES,
    SUCCESSFUL,
    AuditFilter,
    NoStateError,
    RegistryEntry,
    RunRecord,
    StateStore,
    StatusChange,
)
from keysync.tables import print_json, print_json_list, print_table, visible
from keysync.testhooks import pause_for_tests

F = TypeVar("F", bound=Callable[..., Any])


class _App(Protocol):
    """The part of ``keysync.cli.AppContext`` these commands use."""

    quiet: bool
    log_format: str

    @property
    def config(self) -> Config: ...

    def setup_logging(self) -> None: ...


def _say(app: _App, line: str) -> None:
    """A note on stderr (and in the log where it is set up): ``logs.tell_user``."""
    from keysync.logs import tell_user

    tell_user(line, stderr_format=app.log_format, quiet=app.quiet)


class _AnyCaseChoice(click.Choice):  # type: ignore[type-arg]  # (generic from click 8.2)
    """A choice taken in any case, and listed as written (click lists them lowercased:
    'proposed', where every page and table writes Proposed)."""

    def __init__(self, choices: Sequence[str]) -> None:
        super().__init__(choices, case_sensitive=False)

    def get_invalid_choice_message(self, value: Any, ctx: click.Context | None) -> str:
        return f"{value!r} is not one of {', '.join(map(repr, self.choices))}."

    def get_metavar(self, param: click.Parameter, ctx: Any = None) -> str:
        return f"[{'|'.join(map(str, self.choices))}]"  # (click 8.1 passes no ctx)


def _db_path(app: _App) -> Path:
    return app.config.data_dir / DB_NAME


def _open(app: _App) -> StateStore | None:
    """The store, or None (after saying so on stderr) when nothing has run yet."""
    try:
        return StateStore.open(_db_path(app), create=False, output_dir=app.config.output_dir)
    except NoStateError as exc:
        _say(app, f"keysync: {exc}")
        return None


def _open_listing(app: _App, as_json: bool) -> StateStore | None:
    """``_open`` for a command that lists: with ``--json``, nothing to list is ``[]``."""
    store = _open(app)
    if store is None and as_json:
        print_json([])
    return store


def _open_required(app: _App) -> StateStore:
    return StateStore.open(_db_path(app), create=False, output_dir=app.config.output_dir)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(
        func
    )


def _utc_stamp() -> tuple[str, str]:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ"), now.strftime("%Y%m%dT%H%M%SZ")


def _normalize(app: _App, raw: str) -> str:
    from keysync.normalization import compile_rules

    return compile_rules(app.config.normalize).normalize(raw)


# ------------------------------------------------------------------- registry


@click.group("registry")
def registry() -> None:
    """Inspect master keys and move them through their lifecycle.

    \b
    Proposed   -> Active      keysync registry approve KEY... | --all
    Deprecated -> Active      keysync registry approve KEY...
    Proposed   -> Deprecated  keysync registry deprecate KEY...
    Active     -> Deprecated  keysync registry deprecate KEY...
    after a rule change       keysync registry rekey (carries approvals to the new forms)

    \b
    Example:
      keysync registry list --status Proposed
      keysync registry approve CUST-00146 PROD-ADA-155
    """


@registry.command("list")
@click.option(
    "--status",
    type=_AnyCaseChoice(STATUSES),
    help="Only master keys with this status.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Show at most N master keys.")
@json_option
@click.pass_obj
def registry_list(app: _App, status: str | None, limit: int | None, as_json: bool) -> None:
    """List master keys, sorted by master key.

    \b
    Example:
      keysync registry list --status Proposed --limit 20
      keysync registry list --json > registry.json
    """
    store = _open_listing(app, as_json)
    if store is None:
        return
    with store:  # streamed from the database: a registry of millions is never held whole
        entries = store.iter_registry(status, limit)
        if as_json:
            print_json_list(map(_entry_json, entries))
            return
        first = next(entries, None)
        if first is None:
            _say(app, f"no master keys{f' with status {status}' if status else ''}")
            return
        widths = store.registry_widths(_LISTED, status, limit, visible)
        print_table(
            ["master_key", "status", "strategy", "source", "source_key", "seen_in", "last_seen_at"],
            (
                [*(getattr(e, c) for c in _LISTED[:5]), e.seen_in or "-", e.last_seen_at]
                for e in chain([first], entries)
            ),
            widths,
            whole=("master_key", "source_key"),
        )
        total = store.registry_count(status) if limit is not None else 0
    if limit is not None and total > limit:
        _say(app, f"{limit:,} of {total:,} master keys shown (--limit {limit})")


MANUAL_ID = re.compile(r"manual-\d{8}T\d{6}Z-[0-9a-f]{4}")  # a manual session's audit run id

_LISTED = (  # the columns of `registry list`
    "master_key",
    "status",
    "strategy",
    "source_system",
    "source_key",
    "seen_in",
    "last_seen_at",
)


def _entry_json(entry: RegistryEntry) -> dict[str, Any]:
    data: dict[str, Any] = {name: getattr(entry, name) for name in REGISTRY_COLUMNS}
    data["key"] = entry.key
    data["in_authority"] = entry.in_authority
    return data


class _Found(NamedTuple):
    """What names find: ``entries`` per name, and per exact name of a key's own (mirror)
    entry, ``others``: that key's other entries, which the name does not reach."""

    entries: dict[str, list[RegistryEntry]]
    others: dict[str, list[RegistryEntry]]


def _find_entries(app: _App, store: StateStore, names: Sequence[str]) -> _Found:
    """For each name: the master key of that exact name; else every entry of the key the
    name normalizes to; else none.

    A key's entries are all of them: after a strategy switch a key can have a mirror
    entry (named like the key) and namespaced ones, made under any separator and by
    systems since taken out of the config; acting on "the key" (``x_1``, a raw key)
    must not quietly act on some of them. A master key named exactly is that entry
    alone, also when it is the mirror entry named like its key (``X-1`` beside ``B:X-1``
    and ``C:X-1``): deprecating is for good, so a command changes only the entries
    named, and ``others`` lists the key's other entries for the note that says how to
    reach them. The exact name comes first: after a rule change ``registry list`` shows
    ``X-12`` beside the new form ``X-012``, and ``deprecate X-12`` must reach the entry
    it names, not the new form's (which ``X-12`` normalizes to now). The keys are looked
    up together (a scan of the registry per 500 names, ~0.3 s on a million entries),
    not one scan per name.
    """
    exact = store.entries_named(names)
    namespaced = {
        name: as_named
        for name in names
        if name not in exact and (as_named := _namespaced(app, name))
    }
    found = store.entries_named(namespaced.values())
    exact.update((name, found[named]) for name, named in namespaced.items() if named in found)
    key_of: dict[str, str] = {}
    for name in names:
        entry = exact.get(name)
        if entry is None:
            key_of[name] = _normalize(app, name)
        elif entry.master_key == entry.key:  # the key's own name: its other entries noted
            key_of[name] = entry.key
    by_key = store.entries_for_keys({key for key in key_of.values() if key})
    entries: dict[str, list[RegistryEntry]] = {}
    others: dict[str, list[RegistryEntry]] = {}
    for name in names:
        if name not in exact:
            entries[name] = by_key.get(key_of[name], [])
            continue
        entry = exact[name]
        entries[name] = [entry]
        if name in key_of:
            rest = [e for e in by_key.get(key_of[name], []) if e.master_key != entry.master_key]
            if rest:
                others[name] = rest
    return _Found(entries, others)


def _also_the_key_of(found: _Found, target: str = "") -> list[str]:
    """A note per exact name whose key has other entries the command leaves as they are:
    ``X-1 is also the key of B:X-1, C:X-1: name them to change them too``. Entries named
    in the same command, or already in ``target``, are not listed."""
    named = {e.master_key for entries in found.entries.values() for e in entries}
    notes = []
    for name, others in found.others.items():
        left = [e.master_key for e in others if e.master_key not in named and e.status != target]
        if left:
            listed = ", ".join(map(visible, left[:_NAMES_SHOWN]))
            if len(left) > _NAMES_SHOWN:
                listed += f" and {len(left) - _NAMES_SHOWN:,} more"
            them = "it" if len(left) == 1 else "them"
            notes.append(
                f"{visible(found.entries[name][0].master_key)} is also the key of {listed}: "
                f"name {them} to change {them} too"
            )
    return notes


def _namespaced(app: _App, name: str) -> str:
    """``B:cust_001`` as the namespaced master key it names (``B:CUST-001``), or "".

    A raw key names its mirror entry; so a system and a raw key name that system's
    entry: the system's part as written, the key's part normalized.
    """
    separator = app.config.provisioning.namespace_separator
    system, found, raw = name.partition(separator)
    key = _normalize(app, raw) if found and system else ""
    return f"{system}{separator}{key}" if key else ""


def _refuse_empty(keys: Iterable[str], what: str, give: str) -> None:
    """Exit 2 for an empty or blank key (an unset shell variable, quoted): as a filter it
    would match every event, and as a name it is no typo to look up."""
    if any(not key.strip() for key in keys):
        raise KeysyncError(f"{what} is empty: give {give}", EXIT_USAGE)


_A_KEY = "a key (as a report shows it)"
_A_MASTER_KEY = "a master key (as `keysync registry list` shows it)"


def _named_entry(app: _App, store: StateStore, name: str) -> RegistryEntry | None:
    """The entry ``name`` names exactly, or as a system and a raw key (:func:`_namespaced`)."""
    entry = store.registry_entry(name)
    if entry is None and (as_named := _namespaced(app, name)):
        entry = store.registry_entry(as_named)
    return entry


_NAMES_SHOWN = 10  # of a long list of unknown keys (a pasted file): the line stays a line


def _named_before(app: _App, store: StateStore, names: Sequence[str]) -> str:
    """After a rule change and before ``registry rekey``, a key's entries still have its
    old form (seen: `registry approve x_12` with pad_numbers newly 4 said "unknown master
    key 'x_12': no registry entry has it", though X-12 was its entry): the hint that
    names them, or ""."""
    before = _normalized_before(app.config, store)
    if before is None:
        return ""
    forms = {name: form for name in names[:_NAMES_SHOWN] if (form := before(name))}
    by_key = store.entries_for_keys(set(forms.values()))
    hints = []
    for name, form in forms.items():
        if entries := by_key.get(form):
            named = ", ".join(visible(e.master_key) for e in entries[:_NAMES_SHOWN])
            hints.append(f"{visible(repr(name))} is {named} under the rules before they changed")
    if not hints:
        return ""
    return (
        f"; {'; '.join(hints)}: an entry keeps its old form's name until `keysync registry "
        "rekey` carries it to the form now (name it, or rekey first)"
    )


def _unknown(*names: str, changing: bool = True, hint: str = "") -> KeysyncError:
    """Every name the registry lacks, in one line: a list of keys fails once, not one by one."""
    if len(names) == 1:
        what = f"unknown master key {names[0]!r}: no registry entry has it"
    else:
        listed = ", ".join(map(repr, names[:_NAMES_SHOWN]))
        if len(names) > _NAMES_SHOWN:
            listed += f" and {len(names) - _NAMES_SHOWN:,} more"
        what = f"{len(names):,} unknown master keys ({listed}): no registry entry has them"
    done = "; nothing changed" if changing else ""
    return KeysyncError(f"{what} (see `keysync registry list`){hint}{done}", EXIT_USAGE)


@registry.command("show")
@click.argument("key")
@json_option
@click.pass_obj
def registry_show(app: _App, key: str, as_json: bool) -> None:
    """Show one master key: every column and its audit events.

    KEY is a master key (a mirror entry's is its key's name: its key's other
    entries follow it); a raw or normalized key finds its entries too
    (namespaced: one per system).

    \b
    Example:
      keysync registry show CUST-00146
      keysync registry show D:CUST-00146    # with strategy: namespaced
    """
    _refuse_empty([key], "KEY", _A_MASTER_KEY)
    with _open_required(app) as store:
        found = _find_entries(app, store, [key])
        entries = found.entries[key] + found.others.get(key, [])
        if not entries:
            raise _unknown(key, changing=False, hint=_named_before(app, store, [key]))
        events = {e.master_key: _entry_events(store, e) for e in entries}
    if as_json:
        print_json(
            [
                {
                    **_entry_json(e),
                    "events": [dict(zip(AUDIT_COLUMNS, r)) for r in events[e.master_key]],
                }
                for e in entries
            ]
        )
        return
    for number, entry in enumerate(entries):
        if number:
            click.echo()
        data = _entry_json(entry)
        width = max(len(name) for name in data)
        for name, value in data.items():
            shown = json.dumps(value) if isinstance(value, bool) else visible(str(value))
            click.echo(f"{name.ljust(width)}  {shown or '-'}")
        click.echo()
        rows = events[entry.master_key]
        if rows:
            print_table(
                ["timestamp", "run_id", "event", "detail"], ([r[0], r[1], r[3], r[6]] for r in rows)
            )
        else:
            click.echo("(no audit events)")


def _entry_events(store: StateStore, entry: RegistryEntry) -> list[tuple[Any, ...]]:
    marker = f"master key {entry.master_key}"
    return [
        row
        for row in store.audit_rows_for_key(entry.key)
        if str(row[6]).startswith(marker + " ") or str(row[6]).startswith(marker + ":")
    ]


def _change(
    app: _App,
    keys: Sequence[str],
    all_proposed: bool,
    target: str,
    verb: str,
    dry_run: bool = False,
    reason: str = "",
) -> None:

    if not keys and not all_proposed:
        raise KeysyncError(
            f"name the master keys to {verb}, e.g. `keysync registry {verb} CUST-00042`"
            + (", or use --all" if verb == "approve" else ""),
            EXIT_USAGE,
        )
    if keys and all_proposed:
        raise KeysyncError("give master keys or --all, not both", EXIT_USAGE)
    _refuse_empty(keys, "KEY", _A_MASTER_KEY)
    data_dir = app.config.data_dir
    store = _open_required(app)
    app.setup_logging()  # after: a command refused for want of a state leaves no log behind
    stamp, compact = _utc_stamp()
    # Unique like a run id: two sessions in one second are still two sessions.
    actor = f"manual-{compact}-{secrets.token_hex(2)}"
    command = f"keysync registry {verb}" + (" --all" if all_proposed else "")
    with (
        store,
        _writer_lock(data_dir, actor, command, dry_run),
        _saying_what_an_interruption_left(app, store, actor, command),
    ):
        if not dry_run:
            _publish_killed_runs_reports(app, store)
        targets: list[str] | None = None
        notes: list[str] = []
        if not all_proposed:
            targets, unknown = [], []
            found = _find_entries(app, store, keys)
            for name, entries in found.entries.items():
                if not entries:
                    unknown.append(name)
                targets.extend(e.master_key for e in entries)
            if unknown:
                raise _unknown(*unknown, hint=_named_before(app, store, unknown))
            notes = _also_the_key_of(found, target)
        user = os_user()
        changes = store.change_status(
            targets,
            target,
            actor=actor,
            now=stamp,
            command=command,
            user=user,
            reason=reason,
            dry_run=dry_run,
        )
    done = [c for c in changes if c.changed]
    past = "approved" if verb == "approve" else "deprecated"
    noun = "master key" if len(done) == 1 else "master keys"
    if dry_run:  # what would change, each line marked (stdout may go to a file alone)
        if not app.quiet:
            for change in changes:
                click.echo(_change_line(change) + (" (dry run)" if change.changed else ""))
        for note in notes:
            _say(app, note)
        _say(app, f"would {verb} {len(done):,} {noun} (dry run: nothing changed)")
        return
    from keysync.logs import get_logger

    def listing() -> None:
        # Each change in the log too, for a collector: who, and the audit run id to look up.
        log = get_logger(stage="cli")
        event = "key.approved" if verb == "approve" else "key.deprecated"
        how = f"by hand ({command}, {user}, audit run id {actor})"
        given = {"user_reason": reason} if reason else {}
        for change in done:
            log.info(event, master_key=change.master_key, reason=how, **given)
        if not app.quiet:
            for change in changes:
                click.echo(_change_line(change))
        for note in notes:  # after the changes: the entries of the key left as they are
            _say(app, note)

    where = f"audit run id {actor}" if done else "nothing changed, nothing audited"
    _list_then_say(app, listing, f"{past} {len(done):,} {noun} ({where})", bool(done))


def _holders_at_the_last_run(
    config: Config, store: StateStore
) -> Callable[[set[str]], Mapping[str, Collection[str]]] | None:
    """Where the last successful run found keys, for the entries ``registry rekey`` makes;
    None if that run shaped keys under other rules (its history has the old forms only).

    The strategy and the separator shape master keys, not keys: a change of them alone
    leaves the history's keys in the forms they have now."""
    from keysync.history import holders_when_last_read

    recorded = store.latest_flags("rules")
    now = config.key_rules()
    # As rules.changed compares them: a setting a run of an older keysync did not record
    # is not a change.
    if recorded is None or any(recorded[name] != now[name] for name in recorded.keys() & now):
        return None
    return lambda keys: holders_when_last_read(store.load_history_state(), keys)


def _normalized_before(config: Config, store: StateStore) -> Callable[[str], str] | None:
    """The normalization of the rules before the latest change of them, as the runs then
    recorded them (``flags.rules``; the last run's, if the rules changed since): to find
    the keys a change split (``rekey._splits``), and an entry of a key's old form."""
    import msgspec

    from keysync.normalization import compile_rules

    before = store.latest_flags("rules")  # other rules than now: no run has met the change
    now_rules = config.key_rules()
    if before is None or all(before[k] == now_rules[k] for k in before.keys() & now_rules):
        before = store.rules_before_change()
    if not before:
        return None
    prefix = "normalize."
    fields = {k.removeprefix(prefix): v for k, v in before.items() if k.startswith(prefix)}
    now = msgspec.to_builtins(config.normalize)
    try:
        rules = msgspec.convert({**now, **fields}, type(config.normalize))
    except msgspec.ValidationError:  # recorded by another keysync: no split is found
        return None
    return compile_rules(rules).normalize


def _writer_lock(
    data_dir: Path, actor: str, command: str, dry_run: bool
) -> contextlib.AbstractContextManager[object]:
    """The run lock for a change by hand; none for its ``--dry-run``, which writes nothing
    and reads a committed state: held through a long listing, it would make a cron run
    that starts meanwhile fail (registry hunt)."""
    from keysync.lock import RunLock

    if dry_run:
        return contextlib.nullcontext()
    return RunLock.acquire(data_dir, actor, purpose=command)


def _publish_killed_runs_reports(app: _App, store: StateStore) -> None:
    """Before a change by hand, publish the reports a run killed after its commit left
    staged: published later (by the next run or its ``--resume``) they would show the
    registry as it was before this change, as if it were the latest."""
    from keysync.logs import get_logger
    from keysync.runner import publish_leftovers

    try:
        publish_leftovers(app.config, store)
    except (KeysyncError, OSError) as exc:  # output/ full or read-only: the change still goes
        get_logger(stage="cli").error("run.unpublished", reason=str(exc))


def _change_line(change: StatusChange) -> str:
    state = (
        f"{change.old} -> {change.new}" if change.changed else f"already {change.old} (unchanged)"
    )
    return f"{visible(change.master_key)}: {state}"


@contextlib.contextmanager
def _saying_what_an_interruption_left(
    app: _App, store: StateStore, actor: str, command: str
) -> Iterator[None]:
    """A Ctrl-C or SIGTERM before a change by hand returns: say whether it changed anything.

    Its transaction is whole or not there, so the audit trail tells which: no event of
    ``actor`` means nothing was changed (exit 130); events mean every change was made, and
    the command ends as done, as :func:`_list_then_say` ends it.
    """
    before = store.last_event_seq()  # under the lock: the change's events come after it
    try:
        yield
    except KeyboardInterrupt as stop:
        with stops_ignored():  # a second one must not garble the answer
            if not store.committed_events_of(actor, after=before):
                raise KeysyncError(
                    f"{stop_name(stop)} stopped `{command}` before it changed anything: "
                    "nothing was changed; run it again",
                    EXIT_INTERRUPTED,
                ) from None
            _say(
                app,
                f"`{command}` made every change before the {stop_name(stop)} "
                f"(audit run id {actor}: keysync audit --run {actor})",
            )
            raise click.exceptions.Exit(0) from None


def _list_then_say(
    app: _App, listing: Callable[[], None], summary: str, committed: bool = True
) -> None:
    """Run ``listing`` (what a command did; ``committed``: changes it made), then say
    ``summary``.

    A Ctrl-C or SIGTERM while listing committed changes (an ``approve --all`` of 400,000
    keys logs and prints for seconds) must not say "interrupted", nor end the process
    without a word: every change is made and audited, so the summary is said all the
    same, and the command ends as done (exit 0).
    """
    try:
        if committed:
            pause_for_tests("listing")
        listing()
    except KeyboardInterrupt as stop:
        if not committed:
            raise
        summary += f"; {stop_name(stop)} cut the listing short, every change was made"
    with stops_ignored():  # "done" must not become "interrupted"
        _say(app, summary)


MAX_REASON = 1000
"""Characters of ``--reason``: a ticket and a sentence or two. It is copied into every
change's audit event, so a pasted document would be copied once for each key."""


def _one_line_reason(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str:
    """``--reason``: kept word for word in the audit trail, so one line of printable text."""
    text = (value or "").strip()
    # A space is printable; tabs, line ends, controls and other spaces (NBSP) are not.
    if bad := next((c for c in text if not c.isprintable()), None):
        code = f"U+{ord(bad):04X} {unicodedata.name(bad, '')}".rstrip()
        named = f"{bad!r} ({code})"
        raise click.BadParameter(
            f"{named} at character {(value or '').index(bad) + 1} is not printable text; give the "
            "reason on one line, without tabs or control characters (plain spaces are fine)"
        )
    if len(text) > MAX_REASON:
        raise click.BadParameter(
            f"it is {len(text):,} characters; keep it to {MAX_REASON:,} (it is copied into "
            "every change's audit event): name a ticket or a document instead"
        )
    return text


_reason_option = click.option(
    "--reason",
    metavar="TEXT",
    callback=_one_line_reason,
    help="Why (a ticket, a decision): kept in each change's audit event.",
)


@registry.command("approve")
@click.argument("keys", nargs=-1)
@click.option("--all", "all_proposed", is_flag=True, help="Approve every Proposed master key.")
@_reason_option
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.pass_obj
def registry_approve(
    app: _App, keys: tuple[str, ...], all_proposed: bool, reason: str, dry_run: bool
) -> None:
    """Make master keys Active (Proposed or Deprecated -> Active).

    KEYS are master keys as `registry list` shows them, each that entry alone
    (X-1 leaves B:X-1 as it is, and says so); a raw key that names no entry
    (x_1) is every entry of the key it normalizes to.

    Each change is an audit event with run id manual-<time>-<4 hex>. While a run
    is in progress this exits 3: try again when it ends.

    \b
    Example:
      keysync registry approve CUST-00146 PROD-ADA-155 --reason "DQ-118: confirmed by CRM"
      keysync registry approve --all --dry-run
    """
    _change(app, keys, all_proposed, "Active", "approve", dry_run, reason)


@registry.command("deprecate")
@click.argument("keys", nargs=-1)
@_reason_option
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.pass_obj
def registry_deprecate(app: _App, keys: tuple[str, ...], reason: str, dry_run: bool) -> None:
    """Deprecate master keys (Proposed or Active -> Deprecated).

    KEYS as for `approve`: a master key is that entry alone (X-1 leaves B:X-1
    as it is, and says so); a raw key that names no entry (x_1) is every entry
    of the key it normalizes to. A Deprecated key comes back only by approve.

    \b
    Example:
      keysync registry deprecate CUST-00146 --reason "customer merged into CUST-00042"
    """
    _change(app, keys, False, "Deprecated", "deprecate", dry_run, reason)


@registry.command("rekey")
@_reason_option
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.pass_obj
def registry_rekey(app: _App, reason: str, dry_run: bool) -> None:
    """After a change of the rules: carry master keys to their keys' new forms.

    An Active entry hands its status to the entry of the new form (made if there is
    none) and is Deprecated as superseded by it, and so does one that a run deprecated
    as unseen since the rules changed; a Proposed one is superseded by the new form's
    entry; one deprecated by hand hands that decision on (the new form is Deprecated,
    unless it is Active by a decision). Nothing is deleted, and each change
    is an audit event (run id manual-<time>-<4 hex>).

    \b
    Example:
      keysync registry rekey --dry-run
      keysync registry rekey
    """
    from keysync.logs import get_logger
    from keysync.rekey import plan_rekeys

    store = _open_required(app)
    app.setup_logging()  # after: a command refused for want of a state leaves no log behind
    stamp, compact = _utc_stamp()
    actor = f"manual-{compact}-{secrets.token_hex(2)}"
    command = "keysync registry rekey"
    with (
        store,
        _writer_lock(app.config.data_dir, actor, command, dry_run),
        _saying_what_an_interruption_left(app, store, actor, command),
    ):
        if not dry_run:
            _publish_killed_runs_reports(app, store)
        # In one committed state: without the lock (a dry run), a run may commit meanwhile.
        with store.reading():
            rekeys = plan_rekeys(
                app.config,
                store.registry_entries(),
                store.deprecated_since_rules_changed(),
                store.deprecated_by_hand(),
                _holders_at_the_last_run(app.config, store),
                store.approved_by_runs,
                store.unread_since_rules_changed(),
                _normalized_before(app.config, store),
            )
        done = 0
        if not dry_run:
            done = store.apply_rekeys(
                rekeys, actor=actor, now=stamp, command=command, user=os_user(), reason=reason
            )
    moving = sum(rekey.action != "skip" for rekey in rekeys)
    noun = "master key" if moving == 1 else "master keys"
    if dry_run:
        summary = f"would rekey {moving:,} {noun} (dry run: nothing changed)"
    elif done:
        summary = f"rekeyed {done:,} {noun} (audit run id {actor})"
    elif rekeys:
        summary = "nothing rekeyed: the entries above are left as they are"
    else:
        summary = (  # said also when every old form has handed over (a second rekey)
            "no master key to rekey: each has its key's form under the rules now, or "
            "has handed over to that form's entry"
        )

    def listing() -> None:
        if done:  # each change in the log too, as approve and deprecate log theirs
            log = get_logger(stage="cli")
            how = f"by hand ({command}, {os_user()}, audit run id {actor})"
            given = {"user_reason": reason} if reason else {}
            for rekey in (r for r in rekeys if r.action != "skip"):
                log.info(
                    "key.rekeyed",
                    master_key=rekey.old.master_key,
                    new_master_key=rekey.new_name,
                    reason=how,
                    **given,
                )
        if not app.quiet:
            for rekey in sorted(rekeys, key=lambda r: r.old.master_key):
                marked = dry_run and rekey.action != "skip"  # as approve --dry-run marks them
                click.echo(visible(_rekey_line(rekey)) + (" (dry run)" if marked else ""))

    _list_then_say(app, listing, summary, committed=done > 0)


def _rekey_line(rekey: Rekey) -> str:
    old = rekey.old
    if rekey.action == "skip":
        return f"{old.master_key}: left as it is ({rekey.reason})"
    if rekey.target is not None and rekey.target_seen_in:
        was = rekey.target.seen_in or "(none)"
        return f"{_rekey_change(rekey)}; seen_in {was} -> {rekey.target_seen_in}"
    return _rekey_change(rekey)


def _rekey_change(rekey: Rekey) -> str:
    old = rekey.old
    if rekey.action.startswith("split") and rekey.target is not None:
        status = "Active" if rekey.action == "split" else "Deprecated"
        target = rekey.target
        return (
            f"{old.master_key} -> {rekey.new_name}: {status} carried (the rules split "
            f"{old.master_key}'s key: {target.source_system}'s {target.source_key} is "
            f"{rekey.new_name} now)"
        )
    moved = f"{old.master_key} -> {rekey.new_name}{' (made)' if rekey.creates else ''}"
    if rekey.action == "carry":
        was = " (a run deprecated it as unseen after the rules changed)"
        return f"{moved}: Active carried, {old.master_key} Deprecated" + (
            was if old.status == "Deprecated" else ""
        )
    if rekey.action == "deprecate":
        return f"{moved}: Deprecated carried (a decision: deprecated by hand)"
    return f"{moved}: {old.master_key} Deprecated (was Proposed)"


@registry.command("export")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True),
    help="Write to this file (atomically; a pipe or device is written to as it is) "
    "instead of stdout ('-': stdout).",
)
@click.pass_obj
def registry_export(app: _App, out: str | None) -> None:
    """Export the whole registry as CSV (the columns of master_key_registry.csv).

    \b
    Example:
      keysync registry export --out registry.csv
      keysync registry export | grep ',Proposed,'
    """
    store = _open(app)
    written = [0]
    with store if store is not None else contextlib.nullcontext():
        entries = store.iter_registry() if store is not None else iter(())
        chunks = _export_chunks(entries, written)
        if out is None or out == "-":
            for chunk in chunks:
                sys.stdout.write(chunk)
            return
        if not out:
            raise KeysyncError("--out is empty: give a file, or - for stdout", EXIT_USAGE)
        into_stderr = _export_to(out, chunks)
    if not into_stderr:  # (a note written into the export itself would be a row of it)
        _say(app, f"wrote {written[0]:,} master key{'' if written[0] == 1 else 's'} to {out}")


def _export_to(out: str, chunks: Iterable[str]) -> bool:
    """Write the export to ``--out``: a regular file (or a new name) atomically, a pipe
    or a device as it is, a descriptor's name (``/dev/stdout``) into that descriptor.
    Returns whether that was the file stderr writes to (``--out /dev/stderr``, ``2>&1``)."""
    descriptor = _descriptor_named(out)
    if descriptor == 1:  # --out /dev/stdout: as without --out (even into `>> file`)
        for chunk in chunks:
            sys.stdout.write(chunk)
        sys.stdout.flush()
        return _same_file(1, 2)
    if descriptor is None:
        _check_export_target(out)
    try:
        if descriptor is not None:
            return _write_to_descriptor(out, descriptor, chunks)
        if _streamed(Path(out)):
            return _write_through(Path(out), chunks)
        _write_atomically(Path(out), chunks)
        return False
    except BrokenPipeError:
        raise KeysyncError(
            f"cannot write {out}: its reader closed it before the end of the export; "
            "export again, with a reader that reads it all",
            EXIT_CANNOT_RUN,
        ) from None
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            reason = "a part of the path is a file, not a folder"
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise KeysyncError(
            f"cannot write {out}: {reason}; "
            + ("make room, or choose another --out" if full else "choose another --out"),
            # A loop of links is a mistake in the path given, as a missing folder is.
            EXIT_USAGE if exc.errno == errno.ELOOP else EXIT_CANNOT_RUN,
        ) from None


def _check_export_target(out: str) -> None:
    """Refuse an ``--out`` that cannot name the file to write, before writing anything."""
    target = Path(out)
    if out.endswith(("/", os.sep)):  # (an existing folder: click.Path refuses it)
        raise KeysyncError(
            f"cannot write {out}: it names a folder; give a file name, e.g. "
            f"--out {target / 'registry.csv'}",
            EXIT_USAGE,
        )
    where = f"{out}: "
    if target.is_symlink():  # written through: its target's folder is the one to check
        try:
            target = target.resolve()
        except (OSError, RuntimeError):  # a loop of links: _write_atomically says so
            return
        where = f"{out}: it points to {target}; "
    folder = target.parent
    if not folder.is_dir():  # a typo is not a folder to make
        if (there := file_in_the_way(folder)) is not None:
            raise KeysyncError(
                f"cannot write {where}{there} is a file, not a folder; choose another --out",
                EXIT_USAGE,
            )
        raise KeysyncError(
            f"cannot write {where}the folder {folder} does not exist; "
            "create it, or choose another --out",
            EXIT_USAGE,
        )


# /dev/stdout, /dev/fd/N, /proc/self/fd/N: a name for a descriptor this process holds open.
_DESCRIPTOR_NAME = re.compile(r"/(?:dev/fd|proc/(?:self|thread-self|(\d+))/fd)/(\d+)")
_STANDARD_NAMES = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}


def _descriptor_named(out: str) -> int | None:
    """The descriptor ``out`` names, itself or through its links (``/dev/stdout`` ->
    ``/proc/self/fd/1``), or None for a name of a file.

    Such a name is written through the descriptor, where it is: opened again, a file
    behind it (`> log`, `>> log`) would be written from its start, and renamed over, it
    would be replaced whole; it may even name no file (a pipe: ``pipe:[123]``).
    """
    path = os.path.abspath(out)
    for _ in range(40):  # (as the kernel follows at most 40 links)
        if path in _STANDARD_NAMES:
            return _STANDARD_NAMES[path]
        if (named := _DESCRIPTOR_NAME.fullmatch(path)) is not None:
            pid, fd = named.groups()
            return int(fd) if pid is None or int(pid) == os.getpid() else None
        try:
            link = os.readlink(path)
        except OSError:  # not a link (or no such file): a name of a file
            return None
        path = os.path.normpath(os.path.join(os.path.dirname(path), link))
    return None


def _streamed(path: Path) -> bool:
    """Whether ``path`` (its target, for a link) exists and is no regular file: a named
    pipe, a device. Those are written to as they are (``echo > p`` does): renamed over,
    a pipe's reader would get nothing and the pipe would be gone. (A folder was refused.)"""
    try:
        return not stat.S_ISREG(path.stat().st_mode)
    except (OSError, RuntimeError):  # no such file (a new name), a loop: as a file
        return False


def _write_through(path: Path, chunks: Iterable[str]) -> bool:
    """Write ``chunks`` into the pipe or device ``path`` as it is: no temp file, no
    rename, no mode to set, no fsync (a pipe has nothing to sync: EINVAL). Blocks until
    a pipe has a reader, as any writer of a named pipe does. Returns whether it is the
    file stderr writes to."""
    # No O_CREAT: gone since _streamed looked, it is not made a plain file without a word.
    fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    try:
        _write_whole(fd, chunks)
        return _same_file(fd, 2)
    finally:
        os.close(fd)


def _write_to_descriptor(out: str, fd: int, chunks: Iterable[str]) -> bool:
    """Write ``chunks`` into the open descriptor ``fd`` (``--out /dev/fd/3``), left open.
    Returns whether it is the file stderr writes to.

    Past the standard three, only a descriptor keysync was given (``3>file``): Python
    opens its own files not inheritable (the state database, the log file), and
    ``/dev/fd/3`` is not the way to write into one of those."""
    if fd == 0:
        raise KeysyncError(
            f"cannot write {out}: it is keysync's input (stdin); give a file, or - for stdout",
            EXIT_USAGE,
        )
    if fd > 2 and not _given(fd):
        raise KeysyncError(
            f"cannot write {out}: keysync was started without a descriptor {fd} "
            f"(as `3>file` gives one); choose another --out",
            EXIT_USAGE,
        )
    if fd == 2:
        sys.stderr.flush()
    _write_whole(fd, chunks)
    return _same_file(fd, 2)


def _given(fd: int) -> bool:
    """Whether ``fd`` is open and came from whoever started keysync (it is inheritable)."""
    try:
        return os.get_inheritable(fd)
    except OSError:  # not open
        return False


def _write_whole(fd: int, chunks: Iterable[str]) -> None:
    """Each chunk as UTF-8 into ``fd``, left open (a buffered file writes all of each:
    a pipe may take a part of one write)."""
    with open(fd, "w", encoding="utf-8", newline="", closefd=False) as handle:
        handle.writelines(chunks)


def _same_file(fd: int, other: int) -> bool:
    """Whether the two descriptors are open on one file (``2>&1``, ``--out /dev/stderr``),
    a terminal aside: the note after the rows there is for the eyes, not in a file."""
    try:
        return os.path.samestat(os.fstat(fd), os.fstat(other)) and not os.isatty(fd)
    except OSError:  # (stderr closed)
        return False


def _export_chunks(entries: Iterator[RegistryEntry], written: list[int]) -> Iterator[str]:
    """The export's CSV text, 10,000 rows at a time (streamed: a registry of millions),
    each row as master_key_registry.csv writes it; ``written[0]`` counts the rows."""
    from keysync.stages.reporter import csv_cell, line_with_hash, safe

    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REGISTRY_COLUMNS)
    for entry in entries:
        cells = [safe(cell) for cell in entry.spec_row()]
        if (line := line_with_hash(cells)) is not None:
            buffer.write(line)
        elif any("\r" in cell for cell in cells):  # csv leaves a CR bare before Python 3.13
            buffer.write(",".join(map(csv_cell, cells)) + "\n")
        else:
            writer.writerow(cells)
        written[0] += 1
        if written[0] % 10_000 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _write_atomically(path: Path, chunks: Iterable[str]) -> None:
    """Write ``path`` whole or not at all, with the mode a plain write would give it.

    The temp file is made 0600, which a rename would carry over: an export for another
    team must keep the existing file's mode (but setuid and setgid, which a `cp` of it
    would not keep either), or take the umask's for a new one. A symlink is written
    through, as a plain write would: the link stays and its target is replaced.
    """
    if path.is_symlink():
        try:
            path = path.resolve()
        except RuntimeError:  # a loop of links, before Python 3.13 (then an OSError)
            raise OSError(errno.ELOOP, "too many levels of symbolic links", str(path)) from None
    try:
        mode = path.stat().st_mode & 0o1777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    remove_dead_writers(path, ".tmp")  # an export killed before its rename left a copy
    # mkstemp: a new file of a name no one can plant a link at (O_EXCL), the pid in it.
    fd, name = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    tmp = Path(name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------- runs

RESUME_HINT = "resume with: keysync run --resume"


def _run_status(app: _App, records: list[RunRecord]) -> list[str]:
    """Outcome as shown: a `running` row whose process no longer holds the lock is interrupted."""
    from keysync.lock import RunLock

    holder = (
        RunLock.holder(app.config.data_dir)
        if any(r.outcome == "running" for r in records)
        else None
    )
    shown = []
    for record in records:
        outcome = record.outcome
        if outcome == "running" and (holder is None or holder.run_id != record.run_id):
            outcome = "interrupted"
        shown.append(outcome)
    return shown


def _changes_of_rules(records: Sequence[RunRecord]) -> dict[str, list[str]]:
    """Each committed run's ``rules.changed`` / ``settings.changed``, by run id: the flags
    ``rules`` and ``settings`` that differ from those of the last successful run before
    it, as the run compared them when it recorded the event (``runner._changed_flags``).
    A dry run records no event: it is not marked (the next real run is)."""
    changed: dict[str, list[str]] = {}
    before: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: r.seq):
        if record.dry_run or record.outcome not in SUCCESSFUL:
            continue
        for name in ("rules", "settings"):
            now = record.flags.get(name)
            if not isinstance(now, dict) or not now:
                continue
            old = before.get(name)
            if old is not None and any(old[k] != now[k] for k in old.keys() & now.keys()):
                changed.setdefault(record.run_id, []).append(name)
            before[name] = now
    return changed


def _flags_text(flags: dict[str, Any], changed: Sequence[str] = ()) -> str:
    """A run's flags as the table shows them; ``changed``: ``rules``, ``settings`` if it
    recorded ``rules.changed``, ``settings.changed`` (``rules-changed``, first)."""
    parts = [f"{name}-changed" for name in changed]
    for name, value in sorted(flags.items()):
        if value is True:
            parts.append(name.replace("_", "-"))
        elif isinstance(value, dict):
            continue  # the rules: in `keysync runs --json`, too long for a table cell
        elif value not in (False, None, "", [], {}):
            shown = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            parts.append(f"{name.replace('_', '-')}={shown}")
    return " ".join(parts) or "-"


def _counts_text(counts: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in counts.items() if isinstance(v, (int, float)) and v]
    registry_counts = counts.get("registry")
    if isinstance(registry_counts, dict):  # every change the run made; the total is no change
        parts.extend(f"{k}={v}" for k, v in registry_counts.items() if k != "registry_total" and v)
    return " ".join(parts) or "-"


def _run_note(record: RunRecord, outcome: str, *, superseded: bool, resumable: str | None) -> str:
    """What a run's message means now: a later committed run removes the checkpoint
    that an interrupted or failed run kept, and ``--resume`` would then start anew.
    ``resumable``: the run whose checkpoint ``--resume`` continues (the newest), if any;
    another run's offer to resume is not ``--resume``'s to keep."""
    from keysync import checkpoint

    note = record.message
    if superseded:
        if "--resume" in note:
            note = note.replace(checkpoint.KEPT, checkpoint.SUPERSEDED)
            if "--resume" in note:  # a resumable failure's own words (a full disk)
                note += f"; {checkpoint.SUPERSEDED}"
        elif outcome == "interrupted":  # killed (kill -9, power cut): its checkpoint went too
            note = f"{note}; {checkpoint.SUPERSEDED}" if note else checkpoint.SUPERSEDED
        return note
    if outcome == "interrupted" and "--resume" not in note:
        note = f"{note}; {RESUME_HINT}" if note else RESUME_HINT
    if "--resume" in note and resumable is not None and resumable != record.run_id:
        other = f"`keysync run --resume` continues run {resumable}, not this one"
        for offer in (checkpoint.KEPT, RESUME_HINT, checkpoint.RESUME_FROM_LAST):
            note = note.replace(offer, other)
        if other not in note:
            note += f"; {other}"
    return note


def _resumable_run(app: _App) -> str | None:
    """The run ``keysync run --resume`` would continue: the newest checkpoint's."""
    from keysync import checkpoint

    try:
        folders = checkpoint.interrupted_runs(app.config.checkpoint_dir)
    except OSError:  # a folder it cannot list: the notes as the runs left them
        return None
    return folders[0].name if folders else None


@click.command("runs", short_help="List past runs: flags, outcome and counts.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the latest N runs.")
@json_option
@click.pass_obj
def runs(app: _App, limit: int | None, as_json: bool) -> None:
    """List past runs: id, start, end, mode, flags, outcome and counts, oldest first.

    \b
    Example:
      keysync runs --limit 10
      keysync runs --json
    """
    store = _open_listing(app, as_json)
    if store is None:
        return
    with store:
        records = store.runs()
    outcomes = _run_status(app, records)
    last_success = max(  # the last run that committed its state (a dry run commits none)
        (
            i
            for i, (record, outcome) in enumerate(zip(records, outcomes))
            if outcome in ("completed", "degraded") and not record.dry_run
        ),
        default=-1,
    )
    first = max(len(records) - limit if limit else 0, 0)
    resumable = _resumable_run(app)
    shown = [
        (
            record,
            outcome,
            _run_note(record, outcome, superseded=position < last_success, resumable=resumable),
        )
        for position, (record, outcome) in enumerate(zip(records, outcomes))
        if position >= first
    ]
    changes = _changes_of_rules(records)
    if as_json:
        print_json(
            [
                {
                    **r.__dict__,
                    "outcome": status,
                    "note": note,
                    "rules_changed": "rules" in changes.get(r.run_id, ()),
                    "settings_changed": "settings" in changes.get(r.run_id, ()),
                }
                for r, status, note in shown
            ]
        )
        return
    if not shown:
        _say(app, "no runs recorded yet")
        return
    rows = []
    for record, outcome, note in shown:
        rows.append(
            [
                record.run_id,
                record.started_at,
                record.ended_at or "-",
                record.mode + (" (dry run)" if record.dry_run else ""),
                _flags_text(record.flags, changes.get(record.run_id, ())),
                outcome,
                "-" if record.exit_code is None else record.exit_code,
                _counts_text(record.counts),
                note,
            ]
        )
    print_table(  # flags and counts whole: one cut with '…' hid what the run did
        ["run_id", "started", "ended", "mode", "flags", "outcome", "exit", "counts", "note"],
        rows,
        whole=("flags", "counts"),
        # At a terminal narrower than the rows (~260 columns with a long note): the note
        # under its row. Into a pipe or a file, one line a run, as before.
        fit=shutil.get_terminal_size().columns if sys.stdout.isatty() else None,
    )


# ---------------------------------------------------------------------- audit


# A day, a UTC time, or a time with its offset, as the trail, a log line (with its
# fraction of a second) or another tool gives it.
_WHEN = click.DateTime(
    [
        "%Y-%m-%d",
        "%Y-%m-%dT%H:%M:%SZ",
        "%Y-%m-%dT%H:%M:%S.%fZ",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%z",
        "%Y-%m-%dT%H:%M:%S.%f%z",
    ]
)
_WHEN_HELP = "UTC unless it has an offset: 2026-11-01, 2026-11-01T02:00:00Z, a log line's time"


@click.command("audit", short_help="Show audit events: registry changes, decisions, outcomes.")
@click.option("--run", "run_id", help="Only the events of this run (or manual-... session).")
@click.option("--event", "events", multiple=True, help="Only this event (repeatable).")
@click.option("--key", "keys", multiple=True, help="Only events about this key (repeatable).")
@click.option(
    "--since", type=_WHEN, metavar="TIME", help=f"Only events at or after TIME ({_WHEN_HELP})."
)
@click.option(
    "--until", type=_WHEN, metavar="TIME", help=f"Only events before TIME ({_WHEN_HELP})."
)
@click.option("--limit", type=click.IntRange(min=1), help="Only the latest N of those events.")
@json_option
@click.pass_obj
def audit(
    app: _App,
    run_id: str | None,
    events: tuple[str, ...],
    keys: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Show audit events (registry changes, provisioning decisions, run outcomes).

    Oldest first; the filters narrow each other. A key is taken as written, as the
    rules normalize it, and, where it names a master key (B:CUST-00146), as that
    master key's system and key.

    \b
    Example:
      keysync audit --run 20261127T020000Z-3f9a
      keysync audit --event key.deprecated --since 2026-11-01
      keysync audit --key CUST-00146 --limit 20
    """
    _refuse_empty(keys, "--key", _A_KEY)
    for raw in keys:
        _refuse_key_of_nothing(app, raw, "--key ")
    _check_event_names(app, events)
    store = _open_listing(app, as_json)
    if store is None:
        return
    with store:
        # As `registry show` and `history` take it: a namespaced master key's ":" would be
        # normalized into a delimiter (B-CUST-00146), which no event has; it names one
        # system's key (B's CUST-00146, not C's), a mirror one its key in every system.
        named = [entry for raw in keys if (entry := _named_entry(app, store, raw)) is not None]
        wanted = AuditFilter(
            run_id=run_id,
            events=events,
            keys=tuple(
                dict.fromkeys(
                    k
                    for k in chain(
                        *((raw, _normalize(app, raw)) for raw in keys),
                        (e.key for e in named if e.strategy != "namespaced"),
                    )
                    if k
                )
            ),
            namespaced=tuple(
                (e.source_system, e.key, e.master_key) for e in named if e.strategy == "namespaced"
            ),
            since=_stamp(since),
            until=_stamp(until, up=True),
            limit=limit,
        )
        if run_id is not None and store.run(run_id) is None and not any(store.audit_rows(run_id)):
            if MANUAL_ID.fullmatch(run_id):
                _say(app, _session_without_events(app, store, run_id))
                return
            raise KeysyncError(
                f"unknown run {run_id!r}: no run or manual change has that id (see `keysync runs`)",
                EXIT_USAGE,
            )
        rows = store.audit_rows_where(wanted)
        if as_json:
            print_json_list(dict(zip(AUDIT_COLUMNS, row)) for row in rows)
            return
        first = next(rows, None)
        if first is None:
            narrowed_more = events or keys or since or until
            narrowed = run_id is not None or narrowed_more
            record = store.run(run_id) if run_id is not None else None
            if record is not None and record.dry_run:  # it recorded none, by design
                _say(
                    app,
                    f"run {run_id} was a dry run: it recorded no audit events (a dry run "
                    "that finishes lists the registry events it would record in its "
                    "audit_log.csv, with an empty seq)",
                )
            elif record is not None and record.outcome == "running" and not narrowed_more:
                _say(app, _running_without_events(record.run_id))
            elif unknown := sorted(set(events) - store.audit_event_names()):
                _say(
                    app,
                    f"no audit events match: the trail has no {', '.join(unknown)} "
                    f"(its events: {', '.join(sorted(store.audit_event_names()))})",
                )
            else:
                _say(app, "no audit events" + (" match" if narrowed else ""))
            return
        widths = store.audit_widths(wanted, shown=visible)
        print_table(list(AUDIT_COLUMNS), chain([first], rows), widths, whole=("key",))


def _running_without_events(run_id: str) -> str:
    """What ``audit --run`` says of a run recorded as running that has no events yet.

    "no audit events match" read as a run that decided nothing; the run records its
    events when it commits, and one killed outright gets its ``run.interrupted`` only
    when the next run (or its ``--resume``) finds it."""
    return (
        f"run {run_id} has recorded no audit events yet: it is still running, or it was "
        "killed before its commit (`keysync runs` says which); a run records its events "
        "when it commits, and a killed one gets its run.interrupted event when the next "
        "run, or its --resume, finds it"
    )


def _check_event_names(app: _App, events: Sequence[str]) -> None:
    """Refuse an ``--event`` no audit event has (exit 2): an empty answer would pass a typo
    off as "none of those yet". A trail may hold names of an older keysync: known too."""
    if not set(events) - AUDIT_EVENTS:
        return
    try:
        with StateStore.open(
            _db_path(app), create=False, output_dir=app.config.output_dir
        ) as store:
            known = sorted(AUDIT_EVENTS | store.audit_event_names())
    except NoStateError:
        known = sorted(AUDIT_EVENTS)
    unknown = [name for name in dict.fromkeys(events) if name not in known]
    if not unknown:
        return
    hints = ""
    for name in unknown:
        if close := difflib.get_close_matches(name, known, n=1):
            which = f" for {visible(name)}" if len(unknown) > 1 else ""
            hints += f"; did you mean {close[0]}{which}?"
    raise KeysyncError(
        f"--event {', '.join(map(visible, unknown))}: no such event"
        + ("s" if len(unknown) > 1 else "")
        + f"{hints} (events: {', '.join(known)})",
        EXIT_USAGE,
    )


def _session_without_events(app: _App, store: StateStore, session: str) -> str:
    """The line for ``audit --run manual-...`` when no event has that id, if the session
    provably happened; else exit 2, as for an unknown run id.

    A manual session records its id in the audit trail only with its changes. It is
    written elsewhere only in the lock file (while it holds the lock, and after a kill
    until the next holder clears it) and, once cleared, in the log's
    ``lock.stale_cleared`` warning, which sends the reader here: those prove it ran.
    Nothing else does (a session that changed nothing never shows its id), so any other
    id is most likely mistyped, and saying "it recorded nothing" would hide the typo.
    """
    from keysync.lock import RunLock

    left = RunLock.left_in_file(app.config.data_dir)
    if left is not None and left.run_id == session and left.pid and pid_alive(left.pid):
        return (
            f"no audit events under {session} yet: it is in progress ({left.purpose}, pid "
            f"{left.pid}, started {left.started_at}); its changes are recorded when it ends"
        )
    if (left is not None and left.run_id == session) or _cleared_lock_named(app, session):
        return (
            f"no audit events: {session} recorded nothing (it was stopped before its "
            "changes were made: nothing was changed)"
        )
    near = store.run_ids_like(session[: len("manual-20261127T093000Z")] + "-%")
    hint = (
        f": the audit trail has {' and '.join(near)} from that second"
        if near
        else " against the run_id column of `keysync audit`"
    )
    raise KeysyncError(
        f"unknown run {session!r}: no run or manual change has that id; check it{hint} "
        "(a manual change that changed nothing, or was stopped before its commit, records "
        "nothing)",
        EXIT_USAGE,
    )


def _cleared_lock_named(app: _App, session: str) -> bool:
    """Whether the log file has the ``lock.stale_cleared`` of ``session``'s lock."""
    try:
        with open(app.config.log_file, encoding="utf-8", errors="replace") as log:
            for line in log:
                if session not in line or "lock.stale_cleared" not in line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("stale_run_id") == session:
                    return True
    except OSError:  # no log file (logging.file elsewhere, rotated away): no proof
        return False
    return False


def _stamp(moment: datetime | None, *, up: bool = False) -> str | None:
    """A --since / --until value as the trail writes times (UTC, ``...Z``, whole seconds).

    ``up``: a fraction of a second counts as the next second, so that ``--until 13:54:46.5``
    keeps the events of 13:54:46 (they are before it); ``--since`` drops the fraction.
    """
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    if up and moment.microsecond:
        moment += timedelta(seconds=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# -------------------------------------------------------------------- history


@click.command("history", short_help="One key's timeline, per system, and its master key.")
@click.argument("key")
@json_option
@click.pass_obj
def history(app: _App, key: str, as_json: bool) -> None:
    """One key's timeline: per system when it was first seen, last seen, and missing since.

    KEY may be written raw; it is normalized with the configured rules first.
    "missing since" for a key that A holds is the start of the current
    propagation gap (as in diff_missing_from_system.csv).

    \b
    Example:
      keysync history CUST-00146
      keysync history " cust_00146 " --json
    """
    from keysync.history import SystemTimeline, key_timeline

    _refuse_empty([key], "KEY", _A_KEY)
    _refuse_key_of_nothing(app, key)
    normalized = _normalize(app, key)
    master_key = None
    with _open_required(app) as store:
        # A master key given as the registry lists it names its own key: a namespaced one
        # (B:CUST-00042), whose ":" would be normalized into a delimiter, or one made under
        # other rules (CUST-7, before pad_numbers made it CUST-0007).
        entry = _named_entry(app, store, key)
        if entry is not None and entry.key != normalized:
            normalized = entry.key
            master_key = entry.master_key if entry.master_key != entry.key else None
        # An entry of a form the rules no longer give its key (X-12 after pad_numbers: 4)
        # is that form's story; `audit --key X-12` adds the events of X-0012, its form now.
        form_now = _normalize(app, entry.source_key) if entry is not None else normalized
        timeline = key_timeline(store, normalized)
        entries = store.entries_for_keys([normalized]).get(normalized, [])
        tried = {
            name
            for record in store.runs()
            if not record.dry_run
            for name in record.flags.get("systems", "").split(",")
        }
    # A system taken out of the config keeps its history, as an unread one does (its last
    # known keys, gaps opening as A grows); say so rather than show it as current.
    configured = set(app.config.sources)
    known = any(s.first_seen or s.missing_since for s in timeline.systems) or entries
    limit = app.config.processing.max_key_length
    if not known and len(key) > limit:  # said so, not echoed whole (seen: KBs on one line)
        from keysync.stages.normalizer import too_long_message

        raise KeysyncError(
            f"{too_long_message(len(key), limit)}: no system has it (a run rejects a row with "
            "such a key: too-long, in rejected_rows.csv)",
            EXIT_USAGE,
        )
    if not known:
        raise KeysyncError(
            f"key {normalized!r} was never seen in any system"
            + (f" (normalized from {key!r})" if normalized != key else "")
            + "; check the spelling, or `keysync registry list` for master keys",
            EXIT_USAGE,
        )
    # A configured system no run has read yet has no history: a row that says why, as
    # the runs that tried found it unavailable, or none tried (--systems, added since).
    listed = {s.system for s in timeline.systems}
    role = {name: "authority" if name == app.config.authority else "peer" for name in configured}
    unread = {name: "no run could" if name in tried else "no run has tried" for name in configured}
    timeline.systems += [
        SystemTimeline(
            name, role[name], False, "", "", "", "", "", "", f"never read ({unread[name]})"
        )
        for name in app.config.sources
        if name not in listed
    ]
    if as_json:
        print_json(
            {
                "key": normalized,
                "key_now": form_now or None,  # the key's form under the rules now
                "systems": [
                    {**s.__dict__, "configured": s.system in configured} for s in timeline.systems
                ],
                "events": [
                    dict(zip(("timestamp", "run_id", "system", "event"), e))
                    for e in timeline.events
                ],
                "registry": [_entry_json(e) for e in entries],
            }
        )
        return
    title = f"history of {normalized}"
    if master_key is not None:
        title += f" (master key {master_key})"
    elif normalized != key:
        title += f" (normalized from {key!r})"
    click.echo(visible(title))
    if form_now and form_now != normalized:
        click.echo(
            visible(
                f"{normalized} is its key's form before the rules changed; under the rules "
                f"now it is {form_now}: `keysync history {form_now}`"
            )
        )
    print_table(
        ["system", "status", "first_seen", "last_seen", "missing_since"],
        (
            [
                s.system
                + (" (authority)" if s.role == "authority" else "")
                + ("" if s.system in configured else " (not in the config)"),
                s.note,
                _when(s.first_seen, s.first_seen_run),
                _when(s.last_seen, s.last_seen_run),
                _when(s.missing_since, s.missing_since_run),
            ]
            for s in timeline.systems
        ),
    )
    if timeline.events:
        click.echo("\nchanges:")
        print_table(["timestamp", "run_id", "system", "event"], timeline.events)
    for entry in entries:
        line = (
            f"master key {entry.master_key}: {entry.status}"
            f" (seen in {entry.seen_in or 'no system'}; "
            + (f"last_seen_at {entry.last_seen_at})" if entry.last_seen_at else "no last_seen_at)")
        )
        click.echo("\n" + visible(line))


def _refuse_key_of_nothing(app: _App, key: str, option: str = "") -> None:
    """Exit 2 for a key the rules normalize to nothing, in `history` and `audit --key`
    alike: no event or history is about it (seen: `audit --key "#!?"` said "no audit
    events match", exit 0, where `history "#!?"` said why it names no key, exit 2)."""
    if _normalize(app, key):
        return
    from keysync.stages.normalizer import empty_key_message

    raise KeysyncError(
        f"{option}{visible(repr(key))}: {empty_key_message(app.config.normalize)}, so it "
        "names no key (empty-key); give a key as a system exports it or a report shows it",
        EXIT_USAGE,
    )


def _when(at: str, run_id: str) -> str:
    return f"{at} ({run_id})" if at else "-"


STATE_COMMANDS: list[click.Command] = [registry, runs, audit, history]
