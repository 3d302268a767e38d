"""Scenario targets: the match rate of every peer, day by day.

Rates are over A ∪ X for each peer X, as SPEC.md defines ``match_rate``. The
rest of A ∪ X is split evenly between "missing in A" and "missing from X",
which keeps every system at the same size N: with rate r, a peer holds
``M = N * 2r / (1 + r)`` of A's keys and ``N - M`` keys of its own.

- ``normal``: 80 % every day (80 / 10 / 10).
- ``drift``: 80 % on day 1, falling linearly to 50 % on day D.
- ``failure``: 80 %, then from day ceil(D/2) on 30 % (a drop of 50 points);
  with D = 2 it drops on day 2.
- ``recovery``: 80 %, a drop to 30 % on day D//3 + 1, then a linear climb back
  to 80 %, reached on day 2D//3 + 1 and kept. It takes three days to show the
  drop and the climb: with D = 2, day 1 is already the outage.

A one-day run (D = 1) is the scenario's state on its last day: drift 50 %,
failure 30 %, recovery 80 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCENARIOS = ("normal", "drift", "failure", "recovery")
NORMAL_RATE = 0.8
DRIFT_END_RATE = 0.5
FAILURE_RATE = 0.3


def failure_day(days: int) -> int:
    """The day the ``failure`` scenario breaks: never day 1 of a series, or nothing would drop."""
    return 1 if days == 1 else max(2, math.ceil(days / 2))


def recovery_days(days: int) -> tuple[int, int]:
    """(day of the sudden drop, first day back to normal) of the ``recovery`` scenario."""
    return days // 3 + 1, (2 * days) // 3 + 1


def target_match_rate(scenario: str, day: int, days: int) -> float:
    """The match rate every peer should have on ``day`` (1-based) of ``days``."""
    if scenario == "normal":
        return NORMAL_RATE
    if scenario == "drift":
        if days == 1:
            return DRIFT_END_RATE
        return NORMAL_RATE - (NORMAL_RATE - DRIFT_END_RATE) * (day - 1) / (days - 1)
    if scenario == "failure":
        return FAILURE_RATE if day >= failure_day(days) else NORMAL_RATE
    if scenario == "recovery":
        drop, back = recovery_days(days)
        if day >= back:
            return NORMAL_RATE
        if day >= drop:
            return FAILURE_RATE + (NORMAL_RATE - FAILURE_RATE) * (day - drop) / (back - drop)
        return NORMAL_RATE
    raise ValueError(f"unknown scenario {scenario!r}")


@dataclass(frozen=True)
class DayTarget:
    """What one day should look like for every peer, in keys (exact counts)."""

    day: int
    match_rate: float
    matched: int  # keys of A the peer holds
    missing_in_a: int  # keys the peer holds that A lacks
    missing_from_system: int  # keys of A the peer lacks

    def as_manifest(self, date: str) -> dict[str, object]:
        union = self.matched + self.missing_in_a + self.missing_from_system
        return {
            "day": self.day,
            "date": date,
            "match_rate": round(self.match_rate, 4),
            "missing_in_a_rate": round(self.missing_in_a / union, 4) if union else 0.0,
            "missing_from_system_rate": round(self.missing_from_system / union, 4)
            if union
            else 0.0,
            "matched": self.matched,
            "missing_in_a": self.missing_in_a,
            "missing_from_system": self.missing_from_system,
        }


def day_targets(scenario: str, days: int, keys: int) -> list[DayTarget]:
    """The targets of days 1..``days`` for systems of ``keys`` keys each."""
    targets = []
    for day in range(1, days + 1):
        rate = target_match_rate(scenario, day, days)
        matched = round(keys * 2 * rate / (1 + rate))
        targets.append(DayTarget(day, rate, matched, keys - matched, keys - matched))
    return targets
