"""``keysync registry rekey``: carry master keys to their keys' forms under the rules now.

A change of the normalization rules gives keys new forms. Left alone, the next run
proposes each new form as a new master key and the old entry, unseen from then on,
is deprecated after ``deprecate_after_runs`` runs: every approval is lost. Rekeying
reads each entry's ``source_key`` (the raw key, as its system wrote it), normalizes
it with the rules now, and where the form differs:

- an **Active** entry hands its status to the entry of the new form (made if there
  is none, approved if it is Proposed), then is Deprecated as superseded by it;
- a **Proposed** entry is Deprecated as superseded (the new form's own entry, made
  if there is none, is the one to review);
- a **Deprecated** entry deprecated by hand (``registry deprecate``, or a deprecation a
  rekey carried) hands that decision on, as an Active one hands on its approval: the
  new form's entry is made Deprecated, or Deprecated if it is Proposed or Active by a
  run's auto-approval (no one's decision); a new form Active otherwise (approved by
  hand, or carried from another key the rules now merge with it) is left as it is;
- a Deprecated entry a run deprecated as unseen since the rules last changed: the
  change unseated it, so it counts as the Active entry it was. Any other Deprecated
  entry is left as it is. Left alone too: an entry whose new form is
  Deprecated by hand (a decision too), or whose key the rules now reject. A new form
  Deprecated otherwise (a run found it unseen, or an earlier rekey superseded it: the
  rules changed back) takes an Active entry's status: that was no one's decision.

A change that splits a key (two raw keys one form under the old rules, two now) hands
the old entry's decision to every part: its ``source_key``'s form as above, and each
Proposed entry whose ``source_key`` the rules before the change gave the old form.

No row is deleted: the old entries stay, Deprecated, and the audit trail says which
new entry superseded each. Planning here is pure; ``StateStore.apply_rekeys`` writes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace

from keysync.config import Config
from keysync.normalization import compile_rules
from keysync.state import RegistryEntry


@dataclass(frozen=True)
class Rekey:
    """What rekeying does to one entry whose key has another form under the rules now."""

    old: RegistryEntry
    new_name: str  # the master key of the new form ("" when skipped for a rejected form)
    new_key: str
    target: RegistryEntry | None  # the entry that has ``new_name`` already, if any
    # "carry" (Active handed on), "supersede" (Proposed), "deprecate" (a deprecation by
    # hand handed on), "split"/"split-deprecate" (either, to a key split off the old form:
    # the target only; the old entry has its own rekey), or "skip"
    action: str
    reason: str = ""  # why it is skipped
    # A new entry's (``creates``): the systems holding ``new_key`` and whether A is one.
    seen_in: str = ""
    in_authority: bool = False
    # The target's seen_in where its holders not read since the rules changed add to it.
    target_seen_in: str = ""

    @property
    def creates(self) -> bool:
        return self.action != "skip" and self.target is None


def plan_rekeys(
    config: Config,
    entries: Iterable[RegistryEntry],
    unseated: Collection[str] = (),
    decided: Collection[str] = (),
    holders: Callable[[set[str]], Mapping[str, Collection[str]]] | None = None,
    auto_approved: Callable[[set[str]], Collection[str]] | None = None,
    stale: Collection[str] = (),
    normalized_before: Callable[[str], str] | None = None,
) -> list[Rekey]:
    """One ``Rekey`` per entry whose ``source_key`` normalizes to another form now.

    ``unseated``: the master keys a run deprecated as unseen since the rules last
    changed (``StateStore.deprecated_since_rules_changed``); ``decided``: those someone
    deprecated by hand (``StateStore.deprecated_by_hand``). ``holders``: given the new
    forms, the systems that held each at the last run (``history.holders_when_last_read``),
    when that run had the rules now; None when it had other rules (its history knows the
    old forms only). A new entry is seen where its form was (:func:`_seen`); ``stale``:
    the systems no run has read since the rules changed. ``normalized_before``: the
    rules before the latest change, to find the keys they split (:func:`_splits`).
    ``auto_approved``: of the master keys given, those Active by a run's auto-approval
    (``StateStore.approved_by_runs``): no one's decision, so a deprecation by hand of the
    same key in its old form outweighs it.

    Entries deprecated by hand are planned last: when the rules merge two keys into one
    form, an approval of the other is carried first and the deprecation is then left as
    it is (listed, with how to carry it), whatever the entries' names."""
    normalize = compile_rules(config.normalize).normalize
    limit = config.processing.max_key_length
    separator = config.provisioning.namespace_separator
    by_name = {entry.master_key: entry for entry in entries}
    made: dict[str, RegistryEntry] = {}  # new entries of this plan, as later ones see them
    plan: list[Rekey] = []
    deciding: list[tuple[RegistryEntry, str, str]] = []  # deprecated by hand, new form
    approving: dict[str, str] = {}  # new forms an approval goes to: the first giver
    for entry in sorted(by_name.values(), key=lambda e: e.master_key):
        new_key = normalize(entry.source_key) if len(entry.source_key) <= limit else ""
        if new_key == entry.key:
            continue
        if not new_key:
            plan.append(Rekey(entry, "", "", None, "skip", "its key is rejected by the rules now"))
            continue
        name = new_key if entry.strategy == "mirror" else f"{entry.system}{separator}{new_key}"
        if entry.status == "Deprecated" and entry.master_key in decided:
            deciding.append((entry, name, new_key))
            continue
        target = made.get(name) or by_name.get(name)
        if entry.status == "Active" or entry.master_key in unseated:
            approving.setdefault(name, entry.master_key)
        if entry.status == "Deprecated" and target is not None and target.status == "Active":
            # Carried already (an earlier rekey), or its new form approved: nothing to do.
            # Listed as "left as it is", a carried approval read as one that was not.
            continue
        if entry.status == "Deprecated" and entry.master_key not in unseated:
            plan.append(Rekey(entry, name, new_key, target, "skip", "it is Deprecated"))
        elif (
            target is not None
            and target.status == "Deprecated"
            and (entry.status == "Proposed" or target.master_key in decided)
        ):
            reason = f"{name} is Deprecated; `keysync registry approve {name}` reinstates it"
            plan.append(Rekey(entry, name, new_key, target, "skip", reason))
        else:
            action = "supersede" if entry.status == "Proposed" else "carry"
            plan.append(Rekey(entry, name, new_key, target, action))
            # A second old entry of the same new form finds it as this leaves it (seen:
            # rules changed twice, X-12's approval carried to X-0012 then X-000012, and X-12
            # was then listed as "left as it is", its new form still taken as Proposed).
            if target is None:
                made[name] = _made_for(entry, name, new_key, action)
            elif action == "carry":
                made[name] = replace(target, status="Active")
    plan += _carry_deprecations(deciding, by_name, made, approving, auto_approved)
    if normalized_before is not None:
        plan += _splits(
            config, by_name, plan, normalize, normalized_before, unseated, decided, auto_approved
        )
    return _seen(config, plan, holders, stale)


def _splits(
    config: Config,
    by_name: Mapping[str, RegistryEntry],
    plan: list[Rekey],
    normalize: Callable[[str], str],
    normalized_before: Callable[[str], str],
    unseated: Collection[str],
    decided: Collection[str],
    auto_approved: Callable[[set[str]], Collection[str]] | None,
) -> list[Rekey]:
    """The decision on an old form goes to each key the rules now split it into, not to
    its ``source_key``'s form alone (seen: pad_numbers 4 -> 0, X-0001 Active, B's X-1 and
    C's X-01: X-1 took the approval and X-01 was proposed again, silently). A Proposed
    entry of a form now (or one Active by a run's auto-approval, for a deprecation) whose
    ``source_key`` the rules before the change gave an old entry's form takes that old
    entry's approval, or its deprecation by hand (``split``, ``split-deprecate``)."""
    separator = config.provisioning.namespace_separator
    planned = {rekey.new_name for rekey in plan} | {rekey.old.master_key for rekey in plan}
    found: list[tuple[RegistryEntry, RegistryEntry, str]] = []
    for entry in sorted(by_name.values(), key=lambda e: e.master_key):
        if entry.master_key in planned or entry.status == "Deprecated":
            continue
        if normalize(entry.source_key) != entry.key:
            continue  # an old form itself
        before = normalized_before(entry.source_key)
        if not before or before == entry.key:
            continue
        name = before if entry.strategy == "mirror" else f"{entry.system}{separator}{before}"
        old = by_name.get(name)
        if old is None or old.strategy != entry.strategy or normalize(old.source_key) == entry.key:
            continue  # no old form, or this is the form its own rekey goes to
        if old.status == "Active" or (old.status == "Deprecated" and name in unseated):
            if entry.status == "Proposed":
                found.append((old, entry, "split"))
        elif old.status == "Deprecated" and name in decided:
            found.append((old, entry, "split-deprecate"))
    actives = {e.master_key for _, e, a in found if a == "split-deprecate" and e.status == "Active"}
    machine = set(auto_approved(actives)) if auto_approved is not None and actives else set()
    return [
        Rekey(old, entry.master_key, entry.key, entry, action)
        for old, entry, action in found
        if entry.status == "Proposed" or entry.master_key in machine
    ]


def _carry_deprecations(
    deciding: list[tuple[RegistryEntry, str, str]],
    by_name: Mapping[str, RegistryEntry],
    made: dict[str, RegistryEntry],
    approving: Mapping[str, str],
    auto_approved: Callable[[set[str]], Collection[str]] | None,
) -> list[Rekey]:
    """A deprecation by hand is a decision about the key, as an approval is: its new form
    takes it ("deprecate"), made Deprecated if there is none, Deprecated if it is
    Proposed or Active by a run's auto-approval. A new form Deprecated already has it;
    one Active otherwise (approved by hand, or carried from another key of that form: the
    rules merged an approved key and a deprecated one) is a decision too: left as it is,
    the line says how to deprecate it."""
    actives = {
        name
        for _, name, _ in deciding
        if (found := made.get(name) or by_name.get(name)) is not None and found.status == "Active"
    }
    machine = set(auto_approved(actives)) if auto_approved is not None and actives else set()
    plan: list[Rekey] = []
    for entry, name, new_key in deciding:
        target = made.get(name) or by_name.get(name)
        if target is not None and target.status == "Deprecated":
            continue  # carried already (an earlier rekey), or deprecated there too
        if name in approving or (
            target is not None and target.status == "Active" and name not in machine
        ):
            why = f", carried from {approving[name]}" if name in approving else ""
            reason = f"{name} is Active{why}; `keysync registry deprecate {name}` deprecates it too"
            plan.append(Rekey(entry, name, new_key, target, "skip", reason))
            continue
        plan.append(Rekey(entry, name, new_key, target, "deprecate"))
        # A second entry of the same form, deprecated by hand too, finds it done.
        made[name] = (
            _made_for(entry, name, new_key, "deprecate")
            if target is None
            else replace(target, status="Deprecated")
        )
    return plan


def _seen(
    config: Config,
    plan: list[Rekey],
    holders: Callable[[set[str]], Mapping[str, Collection[str]]] | None,
    stale: Collection[str] = (),
) -> list[Rekey]:
    """Each new entry's ``seen_in`` and ``in_authority``, as the next run would find them
    if no system changed: else that run records a change that did not happen (seen:
    ``key.resolved`` "X-001 now appears in A" and ``seen_in (none) -> A;B`` for a key A and
    B held all along, because the entry copied the old form's seen_in, empty since the
    rules changed, and was never in the authority).

    As a run counts them: the configured systems holding the key, A included (mirror:
    any; namespaced: A and the entry's system); ``in_authority`` if A is one. Without
    ``holders`` (no run since the rules changed) the old form's entry is the record:
    the last run counted its holders under the old rules, when it still matched.

    ``stale``: the systems no run has read since the rules changed (a peer down then).
    Their history knows the old forms only, and the runs since kept what each held last
    in the old form's ``seen_in``: that is the record of them, for a new entry and for
    the new form's entry that exists already (``target_seen_in``; seen: C down in the run
    after the change, X-12 seen in C, and X-0012 then said seen in B alone, and Z-0005,
    C's alone, in no system, until C came back and a run recorded a change of seen_in
    that did not happen).
    """
    created = [rekey for rekey in plan if rekey.creates]
    made = {rekey.new_name for rekey in created}
    staled: dict[str, set[str]] = {}  # new form -> the stale systems its old forms were seen in
    for rekey in plan:
        if rekey.new_name and stale and not rekey.action.startswith("split"):
            held_then = set(rekey.old.seen_in.split(";")) & set(stale)
            staled.setdefault(rekey.new_name, set()).update(held_then)
    seen: dict[int, tuple[str, bool]] = {}
    if holders is None:
        seen = {id(r): (r.old.seen_in, bool(r.old.in_authority)) for r in created}
    elif created:
        held = holders({rekey.new_key for rekey in created})
        authority, configured = config.authority, set(config.sources)
        for rekey in created:
            systems = {s for s in held.get(rekey.new_key, ()) if s in configured}
            systems = (systems - set(stale)) | staled.get(rekey.new_name, set())
            if rekey.old.strategy != "mirror":
                systems = {s for s in systems if s in (authority, rekey.old.system)}
            seen[id(rekey)] = (";".join(sorted(systems)), authority in systems)
    result = []
    for rekey in plan:
        if id(rekey) in seen:
            rekey = replace(rekey, seen_in=seen[id(rekey)][0], in_authority=seen[id(rekey)][1])
        elif (
            holders is not None
            and rekey.action in ("carry", "supersede", "deprecate")
            and rekey.target is not None
            and rekey.new_name not in made
        ):
            now = set(filter(None, rekey.target.seen_in.split(";")))
            if not now >= staled.get(rekey.new_name, set()):
                shown = ";".join(sorted(now | staled[rekey.new_name]))
                rekey = replace(rekey, target_seen_in=shown)
        result.append(rekey)
    return result


def _made_for(entry: RegistryEntry, name: str, new_key: str, action: str) -> RegistryEntry:
    status = {"carry": "Active", "deprecate": "Deprecated"}.get(action, "Proposed")
    return RegistryEntry(**{**entry.__dict__, "master_key": name, "key": new_key, "status": status})
