"""Messy ways a system writes a canonical key, each normalizing back to it.

Real exports rarely agree on how a key is spelled: ``cust_12345``,
``Cust 12345``, ``=CUST-12345`` (a spreadsheet formula guard), ``ÇUST-12345``
(a keyboard layout), ``"cust 00042"``. Every kind below is built so that the
DEFAULT normalization rules give back the canonical key exactly (a test checks
each kind); under custom rules the manifest normalizes the raw keys itself.

A variant is written as the CSV cell text: only the ``quoted`` kind adds quotes,
and ``unquote`` gives back the raw key a CSV reader sees.
"""

from __future__ import annotations

from collections.abc import Callable

# Rows whose variant gate (10 random bits) is below this are written in canonical form: 70 %.
CANONICAL_GATE = 717
GATE_BITS = 1023

_DOUBLED = ("--", "..", "//", "-_", "_-", " - ", "__", ". ")
_OTHER_DELIMITERS = (":", "|", "\\", "\t")
_COMBO_DELIMITERS = ("..", "//", "_", " ", "-", ".", "/", "__")
_SPECIALS = ("#", "*", "!", "?", "~", "§", "°")
_FORMULA_PREFIXES = ("=", "-", "+", "@")
# Accent tables: each maps every accentable capital to one accented form ("C" -> "Ç").
_ACCENTS = {
    "A": "ÁÀÂÄ",
    "C": "ÇÇÇÇ",
    "E": "ÉÈÊË",
    "I": "ÍÌÎÏ",
    "N": "ÑÑÑÑ",
    "O": "ÓÒÔÖ",
    "U": "ÚÙÛÜ",
}
_ACCENT_TABLES = tuple(
    str.maketrans({plain: accented[n] for plain, accented in _ACCENTS.items()}) for n in range(4)
)


def _lower(key: str, sub: int) -> str:
    return key.lower()


def _mixed(key: str, sub: int) -> str:
    style = sub % 3
    if style == 0:
        return key.title()  # "Cust-12345", "Prod-Abc-789"
    if style == 1:
        return key.capitalize()  # "Prod-abc-789"
    return key[:2].lower() + key[2:]  # "cuST-12345"


def _space(key: str, sub: int) -> str:
    return key.replace("-", " ")


def _underscore(key: str, sub: int) -> str:
    return key.replace("-", "_")


def _dot(key: str, sub: int) -> str:
    return key.replace("-", ".")


def _slash(key: str, sub: int) -> str:
    return key.replace("-", "/")


def _other_delimiter(key: str, sub: int) -> str:
    return key.replace("-", _OTHER_DELIMITERS[sub % len(_OTHER_DELIMITERS)])


def _doubled(key: str, sub: int) -> str:
    return key.replace("-", _DOUBLED[sub % len(_DOUBLED)])


def _padded(key: str, sub: int) -> str:
    return " " * (1 + sub % 3) + key + " " * ((sub >> 2) % 3)


def _special(key: str, sub: int) -> str:
    char = _SPECIALS[sub % len(_SPECIALS)]
    where = (sub >> 3) % 3
    if where == 0:
        return char + key
    if where == 1:
        return key + char
    head, _, tail = key.partition("-")
    return f"{head}-{char}{tail}"


def _accent(key: str, sub: int) -> str:
    # Accent the prefix ("ÇÚST"), the whole key, or the prefix in lower case ("çúst-12345").
    table = _ACCENT_TABLES[sub % len(_ACCENT_TABLES)]
    style = (sub >> 2) % 3
    if style == 0:
        return key.translate(table)
    head, dash, tail = key.partition("-")
    accented = head.translate(table) + dash + tail
    return accented.lower() if style == 1 else accented


def _formula(key: str, sub: int) -> str:
    return _FORMULA_PREFIXES[sub % len(_FORMULA_PREFIXES)] + key


def _quoted(key: str, sub: int) -> str:
    return '"' + key.lower().replace("-", " ") + '"'


def _combo(key: str, sub: int) -> str:
    parts = key.lower().split("-")
    text = parts[0]
    for n, part in enumerate(parts[1:]):
        text += _COMBO_DELIMITERS[(sub >> (3 * n)) % len(_COMBO_DELIMITERS)] + part
    return " " * ((sub >> 9) % 2) + text + " " * ((sub >> 10) % 3)


VARIANT_KINDS: dict[str, Callable[[str, int], str]] = {
    "lower": _lower,
    "mixed-case": _mixed,
    "space": _space,
    "underscore": _underscore,
    "dot": _dot,
    "slash": _slash,
    "other-delimiter": _other_delimiter,
    "doubled-delimiter": _doubled,
    "surrounding-spaces": _padded,
    "special-character": _special,
    "accented": _accent,
    "formula-prefix": _formula,
    "quoted": _quoted,
    "combined": _combo,
}
_KIND_FUNCTIONS = tuple(VARIANT_KINDS.values())
KIND_COUNT = len(_KIND_FUNCTIONS)


def messy_cell(key: str, bits: int) -> str:
    """The cell text of a messy variant of ``key``; ``bits`` (>= 18 random bits) pick it."""
    return _KIND_FUNCTIONS[((bits >> 10) & 0xFF) % KIND_COUNT](key, bits >> 18)


def other_messy_cell(key: str, bits: int, avoid: str) -> str:
    """A messy cell of ``key`` different from ``avoid`` (the other half of a collision)."""
    first = (bits >> 10) & 0xFF
    for step in range(KIND_COUNT):
        cell = _KIND_FUNCTIONS[(first + step) % KIND_COUNT](key, bits >> 18)
        if unquote(cell) != unquote(avoid):
            return cell
    return key.lower() if unquote(avoid) != key.lower() else key.title()  # pragma: no cover


def unquote(cell: str) -> str:
    """The raw key a CSV reader sees for a cell written by this module."""
    if cell[:1] == '"':
        return cell[1:-1].replace('""', '"')
    return cell
