"""A small five-field cron parser: enough to validate ``schedule`` and list next times.

Supports ``*``, numbers, ranges ``a-b``, lists ``a,b``, steps ``*/n`` and ``a-b/n``,
and month/day names (``jan``, ``mon``). Day-of-month and day-of-week follow the
classic Vixie rule: when both are restricted, a day matching either one fires.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

_MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()  # noqa: SIM905
_WEEKDAYS = "sun mon tue wed thu fri sat".split()  # noqa: SIM905
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}),
    ("day of week", 0, 7, {d: i for i, d in enumerate(_WEEKDAYS)}),
)


# ASCII digits only: str.isdigit() also accepts "²", which int() then refuses.
_NUMBER = re.compile("[0-9]+")
# The longest a month can be (February: 29), to reject dates that never occur.
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# How far next_times looks past each firing: 8 years separate some 29 Februaries (2096, 2104).
_SEARCH_DAYS = 366 * 9


class CronError(ValueError):
    """The expression is not a valid five-field cron expression."""


def _value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    token = text.lower()
    if token in names:
        return names[token]
    if not _NUMBER.fullmatch(token):
        raise CronError(f"{name} field: {text!r} is not a number")
    number = int(token)
    if not low <= number <= high:
        raise CronError(f"{name} field: {number} is outside {low}-{high}")
    return number


def _parse_field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{name} field: empty list item in {text!r}")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not _NUMBER.fullmatch(step_text) or int(step_text) == 0:
                raise CronError(f"{name} field: bad step {step_text!r}")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start = _value(first, name, low, high, names)
            end = _value(last, name, low, high, names)
            if start > end:
                raise CronError(f"{name} field: range {base!r} runs backwards")
        else:
            start = _value(base, name, low, high, names)
            end = high if slash else start
        values.update(range(start, end + 1, step))
    return values


class CronSchedule:
    """A parsed cron expression that can list its next firing times."""

    def __init__(self, expression: str) -> None:
        fields = expression.split()
        if len(fields) != 5:
            raise CronError(f"expected 5 fields (minute hour day month weekday), got {len(fields)}")
        parsed = [
            _parse_field(text, name, low, high, names)
            for text, (name, low, high, names) in zip(fields, _FIELDS)
        ]
        self.expression = expression
        self.minutes, self.hours, self.days, self.months, weekdays = parsed
        self.weekdays = {d % 7 for d in weekdays}
        self._dom_any = fields[2] == "*"
        self._dow_any = fields[4] == "*"
        if self._dow_any and not any(
            day <= _DAYS_IN_MONTH[month] for month in self.months for day in self.days
        ):
            raise CronError(
                f"day of month {fields[2]!r} never occurs in month {fields[3]!r}: "
                "the expression never fires"
            )

    def _day_matches(self, moment: datetime) -> bool:
        dom = moment.day in self.days
        dow = (moment.isoweekday() % 7) in self.weekdays
        if self._dom_any or self._dow_any:
            return dom and dow
        return dom or dow

    def next_times(self, after: datetime, count: int = 3) -> list[datetime]:
        """The next ``count`` firing times strictly after ``after`` (minute resolution)."""
        found: list[datetime] = []
        moment = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = moment + timedelta(days=_SEARCH_DAYS)
        while len(found) < count and moment < limit:
            if moment.month not in self.months or not self._day_matches(moment):
                moment = (moment + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if moment.hour not in self.hours:
                moment = (moment + timedelta(hours=1)).replace(minute=0)
                continue
            if moment.minute in self.minutes:
                found.append(moment)
                limit = moment + timedelta(days=_SEARCH_DAYS)
            moment += timedelta(minutes=1)
        if len(found) < count:
            raise CronError("the expression never fires")
        return found
