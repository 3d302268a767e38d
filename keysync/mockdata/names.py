"""Realistic values for the ``name`` column: companies, products, transactions.

Names are what makes a mock export look like a real one, and they exercise the
CSV corners a reader must handle: commas and quotes inside a field, accented
letters, and a few quoted names with an embedded newline (a record that spans
two physical lines). The tables are fixed (their own seed, independent of the
run's seed); which name a key gets is drawn from the run's seed.
"""

from __future__ import annotations

import functools
from random import Random

# Index with ``value & NAME_MASK``: every table has exactly this many entries.
NAME_TABLE_SIZE = 4096
NAME_MASK = NAME_TABLE_SIZE - 1
# Share of names with an embedded newline (0.4 %: a few records per thousand span two lines).
MULTILINE_SHARE = 0.004

_CORES = (
    "Acme",
    "Nordwind",
    "Bluewater",
    "Müller",
    "Søndergaard",
    "Café Central",
    "Zürich",
    "Łódź Textile",
    "Ñandú",
    "Göteborg Marine",
    "São Paulo",
    "Kraków",
    "Ångström",
    "Élan",
    "Crédit Rural",
    "Bergmann",
    "Fjord",
    "Hanse",
    "Alpine",
    "Sakura",
    "Maple Leaf",
    "Red Rock",
    "Silverline",
    "Greenfield",
    "Oakridge",
    "Pacific Rim",
    "Northstar",
    "Evergreen",
    "Lakeside",
    "Summit",
    "Ironbridge",
    "Golden Gate",
    "Harbor",
    "Brightway",
    "Coastal",
    "Riverbend",
    "Keystone",
    "Blackwood",
    "Westbrook",
    "Stonegate",
    "Horizon",
    "Meridian",
    "Atlas",
    "Orion",
    "Vega",
    "Polaris",
    "Zenith",
    "Apex",
    "Pinnacle",
    "Cedar",
    "Willow",
    "Birch",
    "Falcon",
    "Eagle",
    "Heron",
    "Otter",
    "Lynx",
    "Bison",
    '"Blue Ocean"',
    "O'Brien",
    "Dvořák",
    "Øresund",
)
_SECTORS = (
    "Logistics",
    "Foods",
    "Systems",
    "Trading",
    "Holdings",
    "Textiles",
    "Pharma",
    "Energy",
    "Robotics",
    "Analytics",
    "Consulting",
    "Bakery",
    "Brewing",
    "Software",
    "Metals",
    "Shipping",
    "Optics",
    "Motors",
    "Furniture",
    "Insurance",
    "Retail",
    "Media",
    "Labs",
    "Farms",
    "Construction",
    "Electronics",
    "Chemicals",
    "Aviation",
    "Outfitters",
    "Partners",
)
# A leading comma attaches to the sector ("Acme Foods, Inc."): such names need quoting.
_LEGAL = (
    " GmbH",
    " Ltd",
    " Inc.",
    ", Inc.",
    ", LLC",
    " S.A.",
    " AG",
    " Oy",
    " AB",
    " KG",
    " SARL",
    " B.V.",
    " plc",
    " & Co.",
    " & Söhne",
    " S.p.A.",
    " A/S",
    " Corp.",
    " Pty Ltd",
    "",
)
_ADJECTIVES = (
    "Stainless",
    "Organic",
    "Premium",
    "Compact",
    "Heavy-Duty",
    "Wireless",
    "Ergonomic",
    "Recycled",
    "Smart",
    "Classic",
    "Ultra",
    "Eco",
    "Industrial",
    "Portable",
    "Crème",
    "Açaí",
    "Jalapeño",
    "Naïve",
    "Deluxe",
    "Mini",
    "Pro",
    "Vintage",
    "Fresh",
    "Frozen",
)
_PRODUCTS = (
    "Hex Bolt",
    "Coffee Blend",
    "Desk Lamp",
    "Router",
    "Office Chair",
    "Notebook",
    "Cable",
    "Water Filter",
    "Power Drill",
    "Yogurt",
    "Olive Oil",
    "Running Shoe",
    "Backpack",
    'Monitor 27"',
    "Tea Selection",
    "Keyboard",
    "Paint",
    "Screwdriver Set",
    "Rice",
    "Soap",
    "Headphones",
    "Bicycle Tyre",
    "Glue",
    "Pasta",
    "Smoke Detector",
    "Doormat",
)
_PACKS = (
    "",
    "",
    "",
    "",
    ", 1 kg",
    ", 500 ml",
    ", pack of 12",
    " M8",
    " XL",
    ", 2-pack",
    " 10 mm",
    " (EU)",
    ", blue",
    " 2 m",
)
_TXN_KINDS = (
    "Payment from",
    "Refund to",
    "Invoice for",
    "Wire transfer –",
    "Card payment –",
    "Credit note for",
    "Direct debit –",
    "Order from",
)
_SECOND_LINES = (
    "c/o Accounts Payable",
    "Attn: Billing, 2nd floor",
    "Building 7",
    "PO Box 1234",
    "Zweigniederlassung Süd",
    "Dept. 42",
)


def _company(rng: Random) -> str:
    return f"{rng.choice(_CORES)} {rng.choice(_SECTORS)}{rng.choice(_LEGAL)}"


def _product(rng: Random) -> str:
    return f"{rng.choice(_ADJECTIVES)} {rng.choice(_PRODUCTS)}{rng.choice(_PACKS)}"


def _transaction(rng: Random) -> str:
    return f"{rng.choice(_TXN_KINDS)} {_company(rng)}"


@functools.lru_cache(maxsize=1)
def name_tables() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Names per key family (customer, product, transaction), as plain text."""
    rng = Random("keysync-names-v1")
    tables = []
    for make in (_company, _product, _transaction):
        names = []
        for _ in range(NAME_TABLE_SIZE):
            name = make(rng)
            if rng.random() < MULTILINE_SHARE:
                name = f"{name}\n{rng.choice(_SECOND_LINES)}"
            names.append(name)
        tables.append(tuple(names))
    return tables[0], tables[1], tables[2]


def csv_cell(text: str, delimiter: str) -> str:
    """``text`` as one CSV cell: quoted (quotes doubled) only when it has to be."""
    if delimiter in text or '"' in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


@functools.lru_cache(maxsize=4)
def name_cells(delimiter: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The name tables already written as CSV cells for ``delimiter``."""
    customers, products, transactions = name_tables()
    return (
        tuple(csv_cell(name, delimiter) for name in customers),
        tuple(csv_cell(name, delimiter) for name in products),
        tuple(csv_cell(name, delimiter) for name in transactions),
    )


# Plain ASCII names for corrupted rows: they must not add a quoting or cell problem of their own.
PLAIN_NAMES = (
    "Acme Corp",
    "Nordwind Logistics",
    "Bluewater Foods",
    "Greenfield Labs",
    "Summit Energy",
    "Harbor Trading",
    "Orion Systems",
    "Cedar Furniture",
)
