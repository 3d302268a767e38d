"""Mock dates and ``last_seen_at`` values, from a fixed reference date, never the clock.

Day d of a run is ``REFERENCE_DATE + (d - 1)`` days, snapshot at 02:00 UTC, so
the files are the same bytes on any machine on any day.

Each key has, per system, a rhythm and a time of day drawn from its stable
random word: it is active every p days (p = 1..days_of_history) at a fixed
phase, and was last seen on the day before its latest active snapshot date.
So ``last_seen_at`` lies within the ``days_of_history`` calendar days before the
snapshot date and changes only on the days the key is active again: most rows
of consecutive snapshots are the same bytes.
"""

from __future__ import annotations

import functools
from datetime import date, timedelta
from random import Random

REFERENCE_DATE = date(2026, 11, 1)
DAY_SECONDS = 86_400
TIMES_OF_DAY = 8192  # distinct times of day a key can be seen at (13 random bits)
# Corrupted rows copy timestamps from the first rows of a file.
STAMP_SAMPLE = 1000


def snapshot_date(day: int) -> date:
    return REFERENCE_DATE + timedelta(days=day - 1)


def snapshot_at(day: int) -> str:
    """The snapshot moment of ``day`` (1-based), ISO 8601 UTC."""
    return f"{snapshot_date(day).isoformat()}T02:00:00Z"


@functools.lru_cache(maxsize=1)
def _times_of_day() -> list[str]:
    """8192 times of day spread over 24 h, each with its own seconds."""
    rng = Random("keysync-times-of-day")
    step = DAY_SECONDS / TIMES_OF_DAY
    seconds = [int(i * step + rng.random() * step) for i in range(TIMES_OF_DAY)]
    return [f"T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z" for s in seconds]


@functools.lru_cache(maxsize=8)
def _rhythm_table(day: int, history_days: int) -> tuple[list[str], list[int]]:
    """(date by offset, offset by rhythm) on ``day``.

    A rhythm is a (period, phase) pair, period 1..history_days, phase
    0..period-1; the key is active on the days where (day + phase) % period is
    0, and ``offset`` counts the days since then. Offset k means last seen on
    the date k + 1 days before the snapshot date.
    """
    last = snapshot_date(day) - timedelta(days=1)
    dates = [(last - timedelta(days=k)).isoformat() for k in range(history_days)]
    offsets = [
        (day + phase) % period for period in range(1, history_days + 1) for phase in range(period)
    ]
    return dates, offsets


def timestamps(words: list[int], day: int, history_days: int, simulate: bool) -> list[str]:
    """``last_seen_at`` of each key on ``day`` from its word (rhythm: bits 45+, time: 32..44).

    ``simulate`` false (``simulate_history: false``): every row gets the snapshot moment.
    """
    if not simulate:
        return [snapshot_at(day)] * len(words)
    dates, offsets = _rhythm_table(day, history_days)
    rhythms = len(offsets)
    times = _times_of_day()
    return [dates[offsets[(w >> 45) % rhythms]] + times[(w >> 32) & 8191] for w in words]


@functools.lru_cache(maxsize=8)
def _encoded_tables(day: int, history_days: int) -> tuple[list[bytes], list[bytes], list[int]]:
    dates, offsets = _rhythm_table(day, history_days)
    return [d.encode() for d in dates], [f"{t}\n".encode() for t in _times_of_day()], offsets


def timestamp_pieces(
    words: list[int], day: int, history_days: int
) -> tuple[list[bytes], list[bytes]]:
    """The same timestamps as two lists of shared byte strings: dates, and times + newline.

    No per-row object is created: each entry is one of ``history_days`` dates
    or one of 8192 times, which is what makes a million rows cheap.
    """
    dates, times, offsets = _encoded_tables(day, history_days)
    rhythms = len(offsets)
    return (
        [dates[offsets[(w >> 45) % rhythms]] for w in words],
        [times[(w >> 32) & 8191] for w in words],
    )
