"""The key rules of SPEC.md "Normalization", compiled once into fast functions.

``compile_rules`` turns the ``normalize`` config into a ``KeyNormalizer``.
``normalize_many`` takes a whole batch at once: with ``strip_non_alnum`` on,
every ASCII key goes through a few C-level byte passes over the newline-joined
batch (``_AsciiBatch``), and a batch that comes out unchanged is returned as it
is; only keys that are not ASCII after folding take the step-by-step rules
(``normalize``, itself with a one-regex fast path for keys already normal).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from functools import lru_cache, partial
from itertools import compress
from operator import not_

from keysync.config import NormalizeConfig

_TABLE_END = "\U0001f000"  # every combining mark of Unicode 15 lies below (max U+1E94A)


@lru_cache(maxsize=1)
def _combining_marks() -> dict[int, None]:
    """A ``str.translate`` table deleting every combining mark below ``_TABLE_END`` (~15 ms)."""
    combining = unicodedata.combining
    return dict.fromkeys(c for c in range(0x300, ord(_TABLE_END)) if combining(chr(c)))


def _fold_to_ascii(text: str) -> str:
    """NFKD, then drop combining marks: "Café" -> "Cafe"."""
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    if max(decomposed) < _TABLE_END:
        return decomposed.translate(_combining_marks())  # one C pass
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
        steps: list[tuple[str, Callable[[str], str]]] = []  # (rule, step)
        if rules.trim:
            steps.append(("trim", str.strip))
        if rules.ascii_fold:
            steps.append(("ascii_fold", _fold_to_ascii))
        if rules.uppercase:
            steps.append(("uppercase", str.upper))
        separator = rules.collapse_delims
        # re.sub reads "\\" in a replacement as an escape: a "\\" separator must be doubled.
        replacement = separator.replace("\\", "\\\\") if separator else ""
        if rules.strip_non_alnum:
            strip = self._strip_translated(rules.delimiters, separator, replacement)
            name = "strip_non_alnum" if separator is None else "collapse_delims + strip_non_alnum"
            steps.append((name, strip))
        elif separator is not None and rules.delimiters:
            delimiter_runs = re.compile(f"[{re.escape(rules.delimiters)}]+")
            steps.append(("collapse_delims", partial(delimiter_runs.sub, replacement)))
        if rules.trim and not rules.strip_non_alnum:
            # Trim again: folding ("´" -> " ") or collapsing into a whitespace delimiter can
            # leave whitespace at an end, and trim promises none (and idempotent rules).
            # With strip_non_alnum on, stripping already removed it.
            steps.append(("trim", str.strip))
        if rules.pad_numbers > 0:
            width = rules.pad_numbers
            digit_runs = re.compile("[0-9]+")
            steps.append(("pad_numbers", partial(digit_runs.sub, lambda m: m.group().zfill(width))))
        self._named_steps = tuple(steps)
        self._steps = tuple(step for _, step in steps)
        pattern = _normal_form_pattern(rules)
        self._is_normal = re.compile(pattern).fullmatch if pattern else None
        self._batch_is_normal = (
            re.compile(f"(?:{pattern})(?:\n(?:{pattern}))*").fullmatch if pattern else None
        )
        self._ascii_batch = _AsciiBatch.for_rules(rules)

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

    def trace(self, raw: str) -> list[tuple[str, str]]:
        """What each rule makes of ``raw``, in order: ``[("trim", ...), ("uppercase", ...)]``.

        For ``keysync normalize --steps``: the same step functions as ``normalize``, one
        at a time (with strip_non_alnum on, collapsing delimiters is part of its step)."""
        text, trail = raw, []
        for name, step in self._named_steps:
            text = step(text)
            trail.append((name, text))
        return trail

    def normalize_many(self, raws: list[str]) -> list[str]:
        """Normalize a batch; when every key is already normal, return the batch itself."""
        if not raws:
            return []
        if self._ascii_batch is not None:
            return self._normalize_ascii_batch(raws, self._ascii_batch)
        if self._batch_is_normal is not None:
            joined = "\n".join(raws)
            if joined.count("\n") == len(raws) - 1 and self._batch_is_normal(joined):
                return raws
        normalize = self.normalize
        return [normalize(raw) for raw in raws]

    def _normalize_ascii_batch(self, raws: list[str], batch: _AsciiBatch) -> list[str]:
        """The whole batch through the byte rules at once; non-ASCII keys one by one."""
        joined = "\n".join(raws)
        odd: list[int] = []
        joined_raw = joined.isascii()  # the batch is the raws themselves, unchanged
        if not joined_raw:
            odd = list(compress(range(len(raws)), map(not_, map(str.isascii, raws))))
            ascii_raws = raws.copy()
            for i in odd:
                # A key that folds to ASCII joins the batch (trim is moot, see _AsciiBatch);
                # the rest are taken one by one below.
                folded = _fold_to_ascii(raws[i]) if batch.fold else ""
                ascii_raws[i] = folded if folded.isascii() else ""
            odd = [i for i in odd if not ascii_raws[i]]
            joined = "\n".join(ascii_raws)
        if joined.count("\n") != len(raws) - 1:  # a key holds a newline: one by one
            normalize = self.normalize
            return [normalize(raw) for raw in raws]
        data = joined.encode("ascii")
        done = batch.apply(data)
        if done == data and joined_raw:
            return raws  # every key was already normal
        keys = done.decode("ascii").split("\n")
        normalize = self.normalize
        for i in odd:
            keys[i] = normalize(raws[i])
        return keys


class _AsciiBatch:
    """The rules for ASCII keys as C-level passes over a whole newline-joined batch.

    With ``strip_non_alnum`` on, every ASCII character either stays (``A-Z0-9``),
    becomes the separator (a delimiter) or goes; so the rules are one ``upper``,
    one ``bytes.translate``, a squeeze of separator runs and a strip of separators
    at each line's ends: ~20 ns a key instead of ~500 ns for a messy key taken
    alone. ``trim`` and ``ascii_fold`` change nothing an ASCII key that these
    steps keep (whitespace is a delimiter or goes; separators at the ends go).
    """

    def __init__(self, rules: NormalizeConfig, separator: bytes | None) -> None:
        self.uppercase = rules.uppercase
        self.fold = rules.ascii_fold
        kept = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\n" + (separator or b"")
        table = bytearray(range(256))
        if separator is not None:
            for char in rules.delimiters.encode("ascii", "ignore"):
                table[char] = separator[0]
            table[separator[0]] = separator[0]
        self.table = bytes(table)
        self.delete = bytes(
            c for c in range(256) if c not in kept and (separator is None or table[c] == c)
        )
        self.separator = separator
        self.starts = b"\n" + (separator or b"")
        self.ends = (separator or b"") + b"\n"
        width = rules.pad_numbers
        self.short_digits = (
            re.compile(b"(?<![0-9])[0-9]{1,%d}(?![0-9])" % (width - 1)) if width > 1 else None
        )
        self.width = width

    @classmethod
    def for_rules(cls, rules: NormalizeConfig) -> _AsciiBatch | None:
        """The batch rules, or None where they would not equal the per-key steps."""
        separator = rules.collapse_delims
        if not rules.strip_non_alnum or "\n" in rules.delimiters:
            return None
        if separator is None:
            return cls(rules, None)
        if len(separator) != 1 or not separator.isascii() or separator == "\n":
            return None
        return cls(rules, separator.encode("ascii"))

    def apply(self, data: bytes) -> bytes:
        """The normalized batch (same line count: an empty line is a rejected key)."""
        if self.uppercase:
            data = data.upper()
        data = data.translate(self.table, self.delete)
        separator = self.separator
        if separator is not None:
            doubled = separator * 2
            while doubled in data:  # each pass halves every run; memchr-fast, no regex
                data = data.replace(doubled, separator)
            # Separators at each line's ends go (a replace costs ~2 ns a byte: only if needed).
            if self.starts in data:
                data = data.replace(self.starts, b"\n")
            if self.ends in data:
                data = data.replace(self.ends, b"\n")
            data = data.strip(separator)
        if self.short_digits is not None:
            width = self.width
            data = self.short_digits.sub(lambda m: m.group().zfill(width), data)
        return data


def rule_warnings(rules: NormalizeConfig) -> list[str]:
    """Valid rule combinations that delete letters a user most likely meant to keep.

    ``strip_non_alnum`` keeps A-Z and 0-9 only (SPEC.md), so without ``uppercase``
    every lower-case letter goes, and without ``ascii_fold`` every accented one.
    Each warning shows the effect on an example, computed with the rules themselves.
    Then the delimiters the steps before them change (``_unreachable_delimiters``)."""
    warnings = _unreachable_delimiters(rules)
    if not rules.strip_non_alnum:
        return warnings
    normalizer = KeyNormalizer(rules)
    for off, example, letters in (
        ("uppercase", "Cust_12", "lower-case"),
        ("ascii_fold", "CAFÉ-12", "accented"),
    ):
        if not getattr(rules, off):
            becomes = normalizer.normalize(example)
            warnings.append(
                f"normalize.{off} is false and strip_non_alnum keeps only A-Z and 0-9: every "
                f"{letters} letter is deleted ({example!r} becomes {becomes!r}); "
                "try keys with `keysync normalize`"
            )
    return warnings


def _unreachable_delimiters(rules: NormalizeConfig) -> list[str]:
    """Delimiters that ``ascii_fold`` or ``uppercase`` turn into another character before
    the delimiter step (SPEC.md's order): as written, they never match. A fullwidth
    ``／`` folds to ``/``, which then is no delimiter unless it is listed too."""
    if not rules.collapse_delims:
        return []  # no delimiter step: the list changes nothing
    warnings = []
    for char in dict.fromkeys(rules.delimiters):
        folded = _fold_to_ascii(char) if rules.ascii_fold else char
        before = folded.upper() if rules.uppercase else folded
        if before == char or (before and all(c in rules.delimiters for c in before)):
            continue  # as written, or made into delimiters listed too: as meant
        changed = {"ascii_fold": folded != char, "uppercase": before != folded}
        steps = " and ".join(step for step, did in changed.items() if did)
        if before:
            missing = "".join(c for c in before if c not in rules.delimiters)
            effect = f"makes it {before!r} first; add {missing!r} to the delimiters"
        else:  # a combining mark on its own
            effect = "deletes it first; take it out of the delimiters"
        named = f"{char!r} (U+{ord(char):04X})"
        warnings.append(f"normalize.delimiters: {named} never matches: {steps} {effect}")
    return warnings


def separator_warnings(rules: NormalizeConfig, separator: str) -> list[str]:
    """A ``namespace_separator`` a normalized key can contain: a namespaced master key
    (``B-X-1``, B's key ``X-1``) can then be named like a key (``B-X-1``), so after a
    switch between mirror and namespaced two keys would need one name.

    Keys hold the separator of ``collapse_delims`` (never two in a row), and with
    ``strip_non_alnum`` off every character that is not a delimiter (and the delimiters
    too when ``collapse_delims`` is null: nothing replaces them)."""
    joint = rules.collapse_delims or ""

    def in_keys(char: str) -> bool:
        kept = not rules.strip_non_alnum and (not joint or char not in rules.delimiters)
        return char == joint or kept

    if not all(map(in_keys, separator)) or (joint and joint * 2 in separator):
        return []
    example = f"B{separator}X{joint}1"
    safe = [c for c in ":/|@!~" if not in_keys(c)]
    remedy = (
        f"a separator keys cannot hold, such as {safe[0]!r}, avoids it"
        if safe
        else "with these rules keys can hold any separator: strip_non_alnum: true avoids it"
    )
    return [
        f"provisioning.namespace_separator {separator!r} can be part of a key "
        f"(normalize.collapse_delims, strip_non_alnum): a namespaced master key such as "
        f"{example!r} could also be a key, and after a strategy switch one of them "
        f"would get no master key of its own; {remedy}"
    ]


def compile_rules(rules: NormalizeConfig) -> KeyNormalizer:
    """Compile the ``normalize`` config section once, for use on millions of keys."""
    return KeyNormalizer(rules)
