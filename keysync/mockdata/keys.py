"""The universe of canonical keys a mock run can use, in creation order.

Three families, each already in normal form under the default rules:
customers ``CUST-12345`` (5 digits), products ``PROD-ABC-789`` and
transactions ``TXN-2024-001`` (serial at least 3 digits). Within a family,
numbers grow with creation time (a new customer gets a higher number, 2026
transactions come after 2015 ones); the families are interleaved at random.
Universe index order is therefore "creation order": files list rows in it, and
the authority's sliding window drops the oldest keys and adds the newest.

Everything here is bulk work in C where possible (a million keys per second or
so): values are drawn in batches, de-duplicated with ``dict.fromkeys`` (which
keeps draw order, so no hash order ever leaks) and formatted from small tables.
"""

from __future__ import annotations

import functools
import sys
from array import array
from dataclasses import dataclass, field
from itertools import compress, pairwise
from random import Random

CUST, PROD, TXN = 0, 1, 2
FAMILY_NAMES = ("customer", "product", "transaction")

_TXN_FIRST_YEAR = 2015
_TXN_YEARS = 12  # 2015..2026
_TXN_SERIALS = 100_000  # TXN-YYYY-001 .. TXN-YYYY-100000
_SPACE = (100_000, 26**3 * 1000, _TXN_YEARS * _TXN_SERIALS)
_SHARE = (0.35, 0.35, 0.30)
# Never use more than this share of a family's space: sampling stays fast and keys stay sparse.
_MAX_FILL = 0.5


def random_words(rng: Random, count: int, typecode: str) -> array[int]:
    """``count`` random unsigned integers of ``typecode``'s width, drawn in one C call."""
    words: array[int] = array(typecode)
    if count:
        width = words.itemsize
        words.frombytes(rng.getrandbits(8 * width * count).to_bytes(width * count, "little"))
        if sys.byteorder == "big":  # pragma: no cover - same values on any machine
            words.byteswap()
    return words


def max_universe_size() -> int:
    """The most keys one universe can hold (caps per family keep sampling sparse)."""
    small_families = (_SPACE[CUST] + _SPACE[TXN]) * _MAX_FILL / 2
    return int(_SPACE[PROD] * _MAX_FILL * 0.98 + small_families)


@dataclass
class KeyUniverse:
    """Canonical keys in creation order, their family, and their order as sorted strings.

    ``sorted_keys`` lists the keys in string order and ``rank[u]`` is key u's
    place in it, so a system's sorted key list is a mark-and-compress pass
    instead of a sort of a million strings.
    """

    keys: list[str]
    families: bytes
    sorted_order: list[int]
    sorted_keys: list[str] = field(default_factory=list)
    rank: array[int] = field(default_factory=lambda: array("I"))

    def __post_init__(self) -> None:
        self.sorted_keys = list(map(self.keys.__getitem__, self.sorted_order))
        self.rank = array("I", bytes(4 * len(self.keys)))
        rank = self.rank
        for position, u in enumerate(self.sorted_order):
            rank[u] = position

    def __len__(self) -> int:
        return len(self.keys)

    def sorted_keys_of(self, held: list[int]) -> list[str]:
        """The keys of ``held`` in string order: mark them by rank, keep the marked (C speed)."""
        marks = bytearray(len(self.keys))
        for position in map(self.rank.__getitem__, held):
            marks[position] = 1
        return list(compress(self.sorted_keys, marks))


def _sample_sorted(rng: Random, space: int, count: int) -> list[int]:
    """``count`` distinct integers from ``range(space)``, ascending: one per equal stratum.

    Stratified sampling needs no de-duplication and no sort, and with at most
    half the space used the keys still look randomly spaced.
    """
    if count <= 0:
        return []
    draw = rng.random
    bounds = [i * space // count for i in range(count + 1)]
    return [low + int(draw() * (high - low)) for low, high in pairwise(bounds)]


@functools.lru_cache(maxsize=1)
def _format_tables() -> tuple[list[str], list[str], list[str], list[str]]:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    prod_prefixes = [f"PROD-{a}{b}{c}-" for a in letters for b in letters for c in letters]
    three_digits = [f"{n:03d}" for n in range(1000)]
    txn_prefixes = [f"TXN-{_TXN_FIRST_YEAR + y}-" for y in range(_TXN_YEARS)]
    serials = [f"{n:03d}" for n in range(1, _TXN_SERIALS + 1)]
    return prod_prefixes, three_digits, txn_prefixes, serials


def _format(family: int, values: list[int]) -> list[str]:
    prod_prefixes, three_digits, txn_prefixes, serials = _format_tables()
    if family == CUST:
        return [f"CUST-{v:05d}" for v in values]
    if family == PROD:
        return [prod_prefixes[v // 1000] + three_digits[v % 1000] for v in values]
    return [txn_prefixes[v // _TXN_SERIALS] + serials[v % _TXN_SERIALS] for v in values]


def family_weights(size: int) -> tuple[float, float, float]:
    """Family shares for a universe of ``size`` keys: 35/35/30, capped for the small spaces."""
    cust = min(_SHARE[CUST], _MAX_FILL * _SPACE[CUST] / (2 * size))
    txn = min(_SHARE[TXN], _MAX_FILL * _SPACE[TXN] / (2 * size))
    return cust, 1.0 - cust - txn, txn


def build_universe(rng: Random, size: int) -> KeyUniverse:
    """``size`` distinct canonical keys in creation order (random family per position)."""
    if size > max_universe_size():
        raise ValueError(f"a key universe holds at most {max_universe_size()} keys, not {size}")
    # Family per position from one random byte each: byte < cust_cut is a customer, and so on.
    w_cust, w_prod, _ = family_weights(size)
    cust_cut = max(1, int(w_cust * 256)) if w_cust > 0 else 0
    prod_cut = cust_cut + int(w_prod * 256)
    to_family = bytes(CUST if b < cust_cut else (PROD if b < prod_cut else TXN) for b in range(256))
    families = random_words(rng, size, "B").tobytes().translate(to_family)
    counts = [families.count(family) for family in (CUST, PROD, TXN)]
    for family, count in enumerate(counts):
        if count > _SPACE[family] * _MAX_FILL:
            raise ValueError(f"too many {FAMILY_NAMES[family]} keys ({count}) for one universe")
    formatted = [_format(f, _sample_sorted(rng, _SPACE[f], counts[f])) for f in (CUST, PROD, TXN)]
    next_of = tuple(iter(column).__next__ for column in formatted)
    keys = [next_of[family]() for family in families]
    positions = range(size)
    by_family = [
        list(compress(positions, families.translate(_ONE_FAMILY[family])))
        for family in (CUST, PROD, TXN)
    ]
    # "CUST-" < "PROD-" < "TXN-", and within CUST and PROD creation order is string order;
    # TXN serials vary in width ("TXN-2024-1000" < "TXN-2024-999"), so only they need a sort.
    sorted_order = by_family[CUST] + by_family[PROD] + sorted(by_family[TXN], key=keys.__getitem__)
    return KeyUniverse(keys=keys, families=families, sorted_order=sorted_order)


# Byte tables that keep one family (1) and blank the others (0), for ``itertools.compress``.
_ONE_FAMILY = tuple(bytes(int(b == family) for b in range(256)) for family in (CUST, PROD, TXN))
