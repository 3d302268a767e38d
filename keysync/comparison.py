"""Compare the authority with every peer: matches, out-of-authority keys, gaps.

All set algebra between systems runs on dict key views, in C.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from keysync.stages.merger import KeyIndex, SystemKeys


@dataclass
class SystemSummary:
    """One row of ``reconciliation_summary.csv``; counts are None for an unavailable system."""

    system: str
    available: bool
    rows_read: int | None = None
    rows_rejected: int | None = None
    unique_keys: int | None = None
    duplicate_keys: int | None = None
    matched: int | None = None
    missing_in_a: int | None = None
    missing_from_system: int | None = None
    match_rate: float | None = None
    unavailable_reason: str = ""


@dataclass
class Comparison:
    """The outcome of comparing the authority with each available peer."""

    authority: str
    index: KeyIndex
    summaries: dict[str, SystemSummary]
    missing_in_a: dict[str, set[str]] = field(default_factory=dict)
    gaps: dict[str, set[str]] = field(default_factory=dict)


# The kinds of discrepancy by their ``--fail-on`` names (the summary table's headings):
# the summary column that counts each, and what one of it is called in a final line.
DISCREPANCY_KINDS: dict[str, tuple[str, str]] = {
    "missing-in-a": ("missing_in_a", "out-of-authority key"),
    "missing-from-system": ("missing_from_system", "gap"),
    "duplicates": ("duplicate_keys", "duplicate key"),
    "rejected": ("rows_rejected", "rejected row"),
}


def found_discrepancies(
    summaries: Iterable[SystemSummary], kinds: Iterable[str] = DISCREPANCY_KINDS
) -> dict[str, int]:
    """Each of ``kinds`` found, with its count over all systems (one per key and system,
    as the reports count them); kinds not found are left out.

    From the summaries alone, so that a run's record (its counts) answers it too.
    """
    listed = list(summaries)
    found = {}
    for kind in kinds:
        column = DISCREPANCY_KINDS[kind][0]
        count = sum(getattr(s, column) or 0 for s in listed)
        if count:
            found[kind] = count
    return found


def has_discrepancies(summaries: Iterable[SystemSummary]) -> bool:
    """True when any peer differs from A, or any system has duplicates or rejected rows."""
    return bool(found_discrepancies(summaries))


def every_row_rejected(system: SystemKeys) -> bool:
    """True for a source read to its end that gave rows but not one usable key.

    Such a source is unavailable, not a system without keys: what leaves it is an
    export or a setting gone wrong (the wrong encoding, rules that strip every
    key), and read as empty it would make every key of the others a discrepancy:
    a gap for each key of A, or, for A itself, a master key proposed for every
    key of every peer.
    """
    return system.rows_read > 0 and not system.row_keys


def every_row_rejected_reason(path: Path, system: SystemKeys) -> str:
    """``B.csv: every one of its 311 rows was rejected (311 empty-key; the first, line 2: ...)``."""
    types = Counter(row.error_type for row in system.rejected)
    first = min(system.rejected, key=lambda row: row.line)
    counted = ", ".join(f"{count:,} {kind}" for kind, count in sorted(types.items()))
    read = system.rows_read
    rows = "its one row was" if read == 1 else f"every one of its {read:,} rows was"
    return f"{path}: {rows} rejected ({counted}; the first, line {first.line}: {first.message})"


def compare(
    index: KeyIndex,
    authority: str,
    unavailable: dict[str, str],
    all_rejected: Iterable[str] = (),
) -> Comparison:
    """Compare A with every available peer; ``unavailable`` maps system -> reason.

    The unavailable sources in ``all_rejected`` were read to their end and every row
    was rejected: they keep ``rows_read`` and ``rows_rejected``, and their rejected
    rows are reported, as those say why.
    """
    all_rejected = set(all_rejected)
    summaries: dict[str, SystemSummary] = {}
    result = Comparison(authority, index, summaries)
    a_keys = index[authority].keys()
    for name in sorted(index.systems, key=lambda s: (s != authority, s)):
        system = index[name]
        if name in unavailable:
            summary = SystemSummary(name, False, unavailable_reason=unavailable[name])
            if name in all_rejected:
                summary.rows_read, summary.rows_rejected = system.rows_read, len(system.rejected)
            summaries[name] = summary
            continue
        keys = system.keys()
        if name == authority:
            matched, only_here, only_a = len(keys), 0, 0
        else:
            result.missing_in_a[name] = set(keys - a_keys)
            result.gaps[name] = set(a_keys - keys)
            only_here, only_a = len(result.missing_in_a[name]), len(result.gaps[name])
            matched = len(keys) - only_here
        union = matched + only_here + only_a
        summaries[name] = SystemSummary(
            system=name,
            available=True,
            rows_read=system.rows_read,
            rows_rejected=len(system.rejected),
            unique_keys=len(keys),
            duplicate_keys=len(system.repeats),
            matched=matched,
            missing_in_a=only_here,
            missing_from_system=only_a,
            match_rate=round(matched / union, 4) if union else 1.0,
        )
    return result
