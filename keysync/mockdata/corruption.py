"""Corrupted rows, one builder per ``error_type`` of the reader contract.

Each row is built so that exactly its intended error applies under the
contract's precedence (nul-byte, encoding, bad-quoting, extra/missing-cell,
too-long, empty-key): the ``encoding`` row has no NUL and three cells, the
``too-long`` key is letters and digits only, and so on. Every corrupted row is
one physical line. Invalid UTF-8 is carried in the text as surrogate escapes
(``"\\udce9"``) and becomes the raw byte when the file is encoded with
``errors="surrogateescape"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from random import Random

from keysync.mockdata.names import PLAIN_NAMES, csv_cell
from keysync.normalization import KeyNormalizer

ERROR_TYPES = (
    "nul-byte",
    "encoding",
    "bad-quoting",
    "extra-cell",
    "missing-cell",
    "too-long",
    "empty-key",
)

# Latin-1 bytes in a UTF-8 file, each followed by an ASCII byte: never valid UTF-8.
_LATIN1_NAMES = (
    "Caf\udce9 Rouge",
    "M\udcfcller GmbH",
    "Espa\udcf1a Foods SA",
    "S\udcf8rensen ApS",
    "Cr\udce8me Fra\udceeche",
)
_EMPTY_KEY_CANDIDATES = ("#!?", "---", "@@", "***", "?!", "__", "  ", "")
_EXTRA_CELLS = ("EUR", "", "note", "1", "obsolete")
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@dataclass(frozen=True)
class CorruptionContext:
    """What the builders need to know about the target source."""

    delimiter: str
    max_key_length: int
    empty_keys: tuple[str, ...]  # raw keys that normalize to nothing under the configured rules


def corruption_context(
    delimiter: str, max_key_length: int, normalizer: KeyNormalizer
) -> CorruptionContext:
    """The context for one source; ``""`` is always an empty key, whatever the rules."""
    empty_keys = tuple(
        key
        for key in _EMPTY_KEY_CANDIDATES
        if len(key) <= max_key_length and delimiter not in key and normalizer.normalize(key) == ""
    )
    return CorruptionContext(delimiter, max_key_length, empty_keys or ("",))


@dataclass(frozen=True)
class CorruptRow:
    record: str
    error_type: str


_Builder = Callable[[Random, str, str, CorruptionContext], str]


def _cells(ctx: CorruptionContext, *cells: str) -> str:
    return ctx.delimiter.join(csv_cell(cell, ctx.delimiter) for cell in cells)


def _nul_byte(rng: Random, key: str, ts: str, ctx: CorruptionContext) -> str:
    name = rng.choice(PLAIN_NAMES)
    cut = 1 + int(rng.random() * (len(name) - 1))
    if rng.random() < 0.5:
        return _cells(ctx, key, name[:cut] + "\x00" + name[cut:], ts)
    return _cells(ctx, key, name, ts) + "\x00"


def _encoding(rng: Random, key: str, ts: str, ctx: CorruptionContext) -> str:
    return _cells(ctx, key, rng.choice(_LATIN1_NAMES), ts)


def _bad_quoting(rng: Random, key: str, ts: str, ctx: CorruptionContext) -> str:
    d = ctx.delimiter
    name = rng.choice(PLAIN_NAMES)
    if rng.random() < 0.5:
        return f'"{key}"x{d}{csv_cell(name, d)}{d}{csv_cell(ts, d)}'
    # Text right after a closing quote: `"Nordwind" Logistics` (`"Nordwind"s Logistics` when
    # the delimiter is a space, which would make the first form valid).
    first, _, rest = name.partition(" ")
    glue = "s " if d == " " else " "
    return f'{csv_cell(key, d)}{d}"{first}"{glue}{csv_cell(rest, d)}{d}{csv_cell(ts, d)}'


def _extra_cell(rng: Random, key: str, ts: str, ctx: CorruptionContext) -> str:
    return _cells(ctx, key, rng.choice(PLAIN_NAMES), ts, rng.choice(_EXTRA_CELLS))


def _missing_cell(rng: Random, key: str, ts: str, ctx: CorruptionContext) -> str:
    if rng.random() < 0.5:
        return _cells(ctx, key, rng.choice(PLAIN_NAMES))
    return _cells(ctx, key)


def _too_long(rng: Random, key: str, ts: str, ctx: CorruptionContext) -> str:
    length = ctx.max_key_length + 1 + int(rng.random() * 16)
    seed = "".join(c for c in key if c.isalnum()) or "X"
    long_key = (seed * (length // len(seed) + 1))[: length - 4]
    long_key += "".join(_ALNUM[int(rng.random() * len(_ALNUM))] for _ in range(4))
    return _cells(ctx, long_key[:length], rng.choice(PLAIN_NAMES), ts)


def _empty_key(rng: Random, key: str, ts: str, ctx: CorruptionContext) -> str:
    return _cells(ctx, rng.choice(ctx.empty_keys), rng.choice(PLAIN_NAMES), ts)


_BUILDERS: dict[str, _Builder] = {
    "nul-byte": _nul_byte,
    "encoding": _encoding,
    "bad-quoting": _bad_quoting,
    "extra-cell": _extra_cell,
    "missing-cell": _missing_cell,
    "too-long": _too_long,
    "empty-key": _empty_key,
}


def corrupt_rows(
    rng: Random,
    count: int,
    keys: Sequence[str],
    timestamps: Sequence[str],
    ctx: CorruptionContext,
) -> list[CorruptRow]:
    """``count`` corrupted rows; every error type appears once before any repeats.

    ``keys`` and ``timestamps`` are what real rows of the file look like; a
    corrupted row is a damaged copy of one, the way export glitches look.
    """
    order = list(ERROR_TYPES)
    rng.shuffle(order)
    rows = []
    for n in range(count):
        error_type = order[n % len(order)]
        key = keys[int(rng.random() * len(keys))] if keys else "CUST-00001"
        ts = timestamps[int(rng.random() * len(timestamps))] if timestamps else ""
        rows.append(CorruptRow(_BUILDERS[error_type](rng, key, ts, ctx), error_type))
    return rows
