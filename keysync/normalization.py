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


class KeyNormalizer:
    """The compiled rules: ``normalize(raw) -> key`` ("" means the row is rejected).

    Two paths give the same result (a property test checks it against a literal
    reading of SPEC.md): keys already in normal form are recognised by one
    ``fullmatch`` and returned as they are; the others take the steps. With
    ``strip_non_alnum`` on, steps 4 and 5 collapse into one ``str.translate``
    (delimiters become the separator, every other character outside
    ``A-Z0-9`` is deleted) followed by squeezing separator runs.
    """

    def __init__(self, rules: NormalizeConfig) -> None:
        self.rules = rules
        steps: list[Callable[[str], str]] = []
        if rules.trim:
            steps.append(str.strip)
        if rules.ascii_fold:
            steps.append(_fold_to_ascii)
        if rules.uppercase:
            steps.append(str.upper)
        separator = rules.collapse_delims
        # re.sub reads "\\" in a replacement as an escape: a "\\" separator must be doubled.
        replacement = separator.replace("\\", "\\\\") if separator else ""
        if rules.strip_non_alnum:
            steps.append(self._strip_translated(rules.delimiters, separator, replacement))
        elif separator is not None and rules.delimiters:
            delimiter_runs = re.compile(f"[{re.escape(rules.delimiters)}]+")
            steps.append(partial(delimiter_runs.sub, replacement))
        if rules.trim and not rules.strip_non_alnum:
            # Trim again: folding ("´" -> " ") or collapsing into a whitespace delimiter can
            # leave whitespace at an end, and trim promises none (and idempotent rules).
            # With strip_non_alnum on, stripping already removed it.
            steps.append(str.strip)
        if rules.pad_numbers > 0:
            width = rules.pad_numbers
            digit_runs = re.compile("[0-9]+")
            steps.append(partial(digit_runs.sub, lambda m: m.group().zfill(width)))
        self._steps = tuple(steps)
        pattern = _normal_form_pattern(rules)
        self._is_normal = re.compile(pattern).fullmatch if pattern else None
        self._batch_is_normal = (
            re.compile(f"(?:{pattern})(?:\n(?:{pattern}))*").fullmatch if pattern else None
        )

    @staticmethod
    def _strip_translated(
        delimiters: str, separator: str | None, replacement: str
    ) -> Callable[[str], str]:
        """Steps 4 and 5 (collapse delimiters, strip the rest) as one translate + squeeze."""
        kept = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        table: dict[int, str | None] = {}
        for code in range(128):
            if chr(code) not in kept and chr(code) != separator:
                table[code] = None
        if separator is not None:
            for char in delimiters:
                table[ord(char)] = separator
            table.pop(ord(separator), None)
        not_kept = re.compile(f"[^A-Z0-9{re.escape(separator or '')}]+")
        if separator is None:

            def strip(text: str) -> str:
                text = text.translate(table)
                return text if text.isascii() else not_kept.sub("", text)

            return strip
        doubled = separator * 2
        separator_runs = re.compile(f"{re.escape(separator)}{{2,}}")

        def strip_and_squeeze(text: str) -> str:
            text = text.translate(table)
            if not text.isascii():
                text = not_kept.sub("", text)
            if doubled in text:
                text = separator_runs.sub(replacement, text)
            return text.strip(separator)

        return strip_and_squeeze

    def normalize(self, raw: str) -> str:
        """The normalized key for one raw key; "" when nothing is left (``empty-key``)."""
        if self._is_normal is not None and self._is_normal(raw):
            return raw
        text = raw
        for step in self._steps:
            text = step(text)
        return text

    def normalize_many(self, raws: list[str]) -> list[str]:
        """Normalize a batch; when every key is already normal, return the batch itself."""
        if not raws:
            return []
        if self._batch_is_normal is not None:
            joined = "\n".join(raws)
            if joined.count("\n") == len(raws) - 1 and self._batch_is_normal(joined):
                return raws
        normalize = self.normalize
        return [normalize(raw) for raw in raws]


def compile_rules(rules: NormalizeConfig) -> KeyNormalizer:
    """Compile the ``normalize`` config section once, for use on millions of keys."""
    return KeyNormalizer(rules)
