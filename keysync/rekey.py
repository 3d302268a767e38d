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
- a **Deprecated** entry is left as it is (a decision someone made), unless a run
  deprecated it as unseen since the rules last changed: the change unseated it, so it
  counts as the Active entry it was. Left alone too: an entry whose new form is
  Deprecated by hand (a decision too), or whose key the rules now reject. A new form
  Deprecated otherwise (a run found it unseen, or an earlier rekey superseded it: the
  rules changed back) takes an Active entry's status: that was no one's decision.

No row is deleted: the old entries stay, Deprecated, and the audit trail says which
new entry superseded each. Planning here is pure; ``StateStore.apply_rekeys`` writes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

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
    action: str  # "carry" (Active handed on), "supersede" (Proposed), or "skip"
    reason: str = ""  # why it is skipped

    @property
    def creates(self) -> bool:
        return self.action != "skip" and self.target is None


def plan_rekeys(
    config: Config,
    entries: Iterable[RegistryEntry],
    unseated: Collection[str] = (),
    decided: Collection[str] = (),
) -> list[Rekey]:
    """One ``Rekey`` per entry whose ``source_key`` normalizes to another form now.

    ``unseated``: the master keys a run deprecated as unseen since the rules last
    changed (``StateStore.deprecated_since_rules_changed``); ``decided``: those someone
    deprecated by hand (``StateStore.deprecated_by_hand``)."""
    normalize = compile_rules(config.normalize).normalize
    limit = config.processing.max_key_length
    separator = config.provisioning.namespace_separator
    by_name = {entry.master_key: entry for entry in entries}
    made: dict[str, RegistryEntry] = {}  # new entries of this plan, as later ones see them
    plan: list[Rekey] = []
    for entry in sorted(by_name.values(), key=lambda e: e.master_key):
        new_key = normalize(entry.source_key) if len(entry.source_key) <= limit else ""
        if new_key == entry.key:
            continue
        if not new_key:
            plan.append(Rekey(entry, "", "", None, "skip", "its key is rejected by the rules now"))
            continue
        name = new_key if entry.strategy == "mirror" else f"{entry.system}{separator}{new_key}"
        target = by_name.get(name) or made.get(name)
        if entry.status == "Deprecated" and entry.master_key not in unseated:
            plan.append(Rekey(entry, name, new_key, target, "skip", "it is Deprecated"))
        elif entry.status == "Deprecated" and target is not None and target.status == "Active":
            continue  # carried already (an earlier rekey): nothing left to do
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
            if target is None:  # a second old entry of the same new form finds this one
                made[name] = _made_for(entry, name, new_key, action)
    return plan


def _made_for(entry: RegistryEntry, name: str, new_key: str, action: str) -> RegistryEntry:
    status = "Active" if action == "carry" else "Proposed"
    return RegistryEntry(**{**entry.__dict__, "master_key": name, "key": new_key, "status": status})
