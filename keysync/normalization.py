"""The key rules of SPEC.md "Normalization", compiled once into fast functions.

``compile_rules`` turns the ``normalize`` config into a ``KeyNormalizer``. Most
keys in real exports are already in normal form, so the normalizer first asks
one regex whether a whole batch is already normal (one pass in C) and only
runs the step-by-step rules on keys that are not.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from functools import partial

from keysync.config import NormalizeConfig


def _fold_to_ascii(text: str) -> str:
    """NFKD, then drop combining marks: "Café" -> "Cafe"."""
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _normal_form_pattern(rules: NormalizeConfig) -> str | None:
    """A regex that a key already in normal form matches, or None if no cheap one exists.

    Only when the output alphabet is closed (uppercase + strip_non_alnum) can a
    regex tell that the rules would leave a key unchanged.
    """
    if not (rules.uppercase and rules.strip_non_alnum):
        return None
    width = rules.pad_numbers
    # Each alternative must take a whole run (the lookaheads): "(?:[A-Z]+|...)+" alone can
    # split a run of letters in 2^n ways, and a long key that is not normal then takes
    # minutes to refuse (2^24 tries for 24 letters and a lowercase one).
    segment = f"(?:[A-Z]+(?![A-Z])|[0-9]{{{width},}}(?![0-9]))+" if width > 1 else "[A-Z0-9]+"
    separator = rules.collapse_delims
    if separator is None:
        return segment
    if rules.trim and separator.isspace():
        return None
    return f"{segment}(?:{re.escape(separator)}{segment})*"


# Whitespace at either end of each line of a joined batch (never the newline itself).
_LINE_EDGE_SPACE = re.compile(r"^[^\S\n]+|[^\S\n]+$", re.MULTILINE)


def _fold_lines(text: str) -> str:
    return text if text.isascii() else "\n".join(map(_fold_to_ascii, text.split("\n")))


def _trim_lines(text: str) -> str:
    return _LINE_EDGE_SPACE.sub("", text)


class KeyNormalizer:
    """The compiled rules: ``normalize(raw) -> key`` ("" means the row is rejected).

    Every rule exists twice: as a step on one key, and as a step on a whole batch
    joined with newlines, where each regex runs once over the batch in C. The
    batch steps give exactly the per-key result (a property test checks this).
    """

    def __init__(self, rules: NormalizeConfig) -> None:
        self.rules = rules
        steps: list[Callable[[str], str]] = []
        batch: list[Callable[[str], str]] = []

        def step(one: Callable[[str], str], many: Callable[[str], str]) -> None:
            steps.append(one)
            batch.append(many)

        if rules.trim:
            step(str.strip, _trim_lines)
        if rules.ascii_fold:
            step(_fold_to_ascii, _fold_lines)
        if rules.uppercase:
            step(str.upper, str.upper)
        separator = rules.collapse_delims
        # re.sub reads "\\" in a replacement as an escape: a "\\" separator must be doubled.
        replacement = separator.replace("\\", "\\\\") if separator else ""
        if separator is not None and rules.delimiters:
            delimiter_runs = re.compile(f"[{re.escape(rules.delimiters)}]+")
            collapse = partial(delimiter_runs.sub, replacement)
            step(collapse, collapse)
        if rules.strip_non_alnum:
            keep = "A-Z0-9" + (re.escape(separator) if separator else "")
            not_kept = re.compile(f"[^{keep}]+")
            not_kept_lines = re.compile(f"[^{keep}\n]+")
            step(partial(not_kept.sub, ""), partial(not_kept_lines.sub, ""))
            if separator:
                separator_runs = re.compile(f"{re.escape(separator)}{{2,}}")
                edge_separators = re.compile(
                    f"^{re.escape(separator)}+|{re.escape(separator)}+$", re.MULTILINE
                )
                step(
                    lambda text: separator_runs.sub(replacement, text).strip(separator),
                    lambda text: edge_separators.sub("", separator_runs.sub(replacement, text)),
                )
        if rules.trim and not rules.strip_non_alnum:
            # Trim again: folding ("´" -> " ") or collapsing into a whitespace delimiter can
            # leave whitespace at an end, and trim promises none (and idempotent rules).
            # With strip_non_alnum on, stripping already removed it.
            step(str.strip, _trim_lines)
        if rules.pad_numbers > 0:
            width = rules.pad_numbers
            digit_runs = re.compile("[0-9]+")
            pad = partial(digit_runs.sub, lambda m: m.group().zfill(width))
            step(pad, pad)
        self._steps = tuple(steps)
        # A newline in the delimiters or as the separator would break the joined batch.
        joinable = "\n" not in rules.delimiters and separator != "\n"
        self._batch_steps = tuple(batch) if joinable else None
        pattern = _normal_form_pattern(rules)
        self._is_normal = re.compile(pattern).fullmatch if pattern else None
        self._batch_is_normal = (
            re.compile(f"(?:{pattern})(?:\n(?:{pattern}))*").fullmatch if pattern else None
        )

    def normalize(self, raw: str) -> str:
        """The normalized key for one raw key; "" when nothing is left (``empty-key``)."""
        if self._is_normal is not None and self._is_normal(raw):
            return raw
        text = raw
        for step in self._steps:
            text = step(text)
        return text

    def normalize_many(self, raws: list[str]) -> list[str]:
        """Normalize a batch: the rules run once over the joined batch, not once per key.

        When every key is already normal the batch itself is returned. A batch with
        a newline inside a key cannot be joined; it goes key by key.
        """
        if not raws:
            return []
        joined = "\n".join(raws)
        if joined.count("\n") == len(raws) - 1:
            if self._batch_is_normal is not None and self._batch_is_normal(joined):
                return raws
            if self._batch_steps is not None:
                for step in self._batch_steps:
                    joined = step(joined)
                return joined.split("\n")
        normalize = self.normalize
        return [normalize(raw) for raw in raws]


def compile_rules(rules: NormalizeConfig) -> KeyNormalizer:
    """Compile the ``normalize`` config section once, for use on millions of keys."""
    return KeyNormalizer(rules)
