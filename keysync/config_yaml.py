"""How keysync reads its config file's YAML, and what YAML does that its writer did not mean.

PyYAML follows YAML 1.1: ``010`` is octal, ``1:30`` base 60, ``no`` false, a ``#`` after
a colon a comment, ``*/5`` an alias. Each silently gave a setting another value than the
one written, or an error naming neither the setting nor the remedy. This module keeps
those traps in one place (config.py is the schema and its rules); the line of a setting,
for the error that names it, is found here too.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

import yaml

from keysync.errors import ConfigError


class _Yaml11Number(str):
    """A plain scalar that YAML 1.1 reads as another number than its digits say.

    ``010`` is octal (8) and ``1:30`` base 60 (90) in YAML 1.1, which PyYAML follows,
    while YAML 1.2 and every reader reads them as 10 and text: ``pad_numbers: 010``
    padded to 8 digits and ``seed: 0042`` generated the data of seed 34, silently. The
    loader keeps the text and the value it would have taken, so the error can say both.
    """

    value: int | float


def _yaml11_number(text: str, value: int | float) -> _Yaml11Number:
    number = _Yaml11Number(text)
    number.value = value
    return number


def refuse_yaml11_numbers(data: Any, path: str) -> None:
    """Exit 2 naming the setting for any ``_Yaml11Number`` (a value or a mapping's key)."""
    if isinstance(data, dict):
        for key, value in data.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, _Yaml11Number):
                raise ConfigError(_yaml11_message(path or "(top level)", key, "the name "))
            refuse_yaml11_numbers(value, where)
    elif isinstance(data, list):
        for i, item in enumerate(data):
            refuse_yaml11_numbers(item, f"{path}[{i}]")
    elif isinstance(data, _Yaml11Number):
        raise ConfigError(_yaml11_message(path, data))


def _yaml11_message(path: str, number: _Yaml11Number, what: str = "") -> str:
    """``pad_numbers: 010`` -> what YAML made of it and what to write instead."""
    text = str(number)
    if ":" in text:
        how, instead = f"the base-60 number {number.value}", f"{number.value}"
    else:
        sign = text[0] if text[0] in "+-" else ""
        decimal = sign + (text.lstrip("+-").replace("_", "").lstrip("0") or "0")
        how = f"the octal number {number.value} (a leading 0 makes it octal)"
        instead = decimal
    return (
        f"{path}: YAML reads {what}{text} as {how}: write {instead}, "
        f"or quote it ('{text}') if it is text"
    )


class SafeLoaderNoDuplicates(yaml.SafeLoader):
    """The safe loader, except that a key given twice in one mapping is an error.

    Plain YAML keeps the last value silently: two ``processing:`` blocks would
    drop the first one without a word, the same trap as a misspelt key.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *base" may be overridden by the keys given next to it
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable: the base class reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"key {key!r} is given twice",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)

    def construct_yaml11_int(self, node: yaml.ScalarNode) -> int | _Yaml11Number:
        """An int, or a ``_Yaml11Number`` for octal (``010``) and base 60 (``1:30``)."""
        value: int = super().construct_yaml_int(node)
        digits = str(node.value).replace("_", "").lstrip("+-")
        if ":" in digits or (len(digits) > 1 and digits[0] == "0" and digits.isdigit()):
            return _yaml11_number(str(node.value), value)
        return value

    def construct_yaml11_float(self, node: yaml.ScalarNode) -> float | _Yaml11Number:
        """A float, or a ``_Yaml11Number`` for base 60 (``1:30.5``)."""
        value: float = super().construct_yaml_float(node)
        return _yaml11_number(str(node.value), value) if ":" in str(node.value) else value


SafeLoaderNoDuplicates.add_constructor(
    "tag:yaml.org,2002:int", SafeLoaderNoDuplicates.construct_yaml11_int
)
SafeLoaderNoDuplicates.add_constructor(
    "tag:yaml.org,2002:float", SafeLoaderNoDuplicates.construct_yaml11_float
)


# Characters that YAML reads as syntax at the start of a plain value (an alias, an anchor,
# a tag, a directive, reserved ones, block scalars): `schedule: */5 * * * *` is not text.
_VALUE_STARTS_AS_SYNTAX = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)[ \t]*:[ \t]+([*&!%@`|>])")


def quote_hint(text: str, mark: Any, problem: str) -> str:
    """``; a value that starts with '*' is YAML syntax: ...: schedule: "*/5 * * * *"`` for
    a YAML error at a value that starts with a character YAML reads as syntax, else "".

    PyYAML says "while scanning an alias; expected alphabetic or numeric character, but
    found '/'" of an unquoted cron expression, naming neither the setting nor the remedy.
    """
    if "constructor" in problem:  # a tag YAML knows the syntax of (!!python/...): no typo
        return ""
    lines = re.split("\r\n|[\n\r\x85\u2028\u2029]", text)  # YAML's line breaks, as the mark counts
    if not 0 <= mark.line < len(lines):
        return ""
    line = lines[mark.line]
    found = [m for m in _VALUE_STARTS_AS_SYNTAX.finditer(line) if m.start(2) <= mark.column]
    if not found:
        return ""
    key, start = found[-1][1], found[-1].start(2)
    value = line[start:].split(" #")[0]
    if "{" in line[:start]:  # a flow mapping: the value ends at the next , or }
        value = re.split(r"[,}]", value)[0]
    value = value.strip().replace("\\", "\\\\").replace('"', '\\"')
    return (
        f"; a value that starts with {found[-1][2]!r} is YAML syntax: to give it as text, "
        f'quote it: {key}: "{value}"'
    )


_TEXT_EXPECTED = re.compile(
    r"(\S+): expected str(?: \| null)?, got (?:bool|int|float|date|datetime)"
)


_NUMBER_EXPECTED = re.compile(r"(\S+): expected int(?: \| null)?, got str")
_NOT_OCTAL = re.compile(r"[-+]?0[0-9_]*[89][0-9_]*")  # a leading 0 and an 8 or 9: text
_FLOAT_EXPECTED = re.compile(r"(\S+): expected (float|int)(?: \| null)?, got str")
# What Python takes for a number with an exponent; YAML 1.1 only with a dot and a sign.
_EXPONENT = re.compile(r"([-+]?)([0-9]*)(?:\.([0-9]*))?[eE]([-+]?)([0-9]+)")  # no backtracking


def type_hint(text: str, message: str) -> str:
    """What YAML made of a plain value that is not the type its setting wants, and what to
    write instead (a ``_text_hint``, ``_not_octal_hint`` or ``_exponent_hint``), else ""."""
    return (
        _text_hint(text, message) or _not_octal_hint(text, message) or _exponent_hint(text, message)
    )


def _exponent_hint(text: str, message: str) -> str:
    """`` (YAML reads 1e3 as text: a number with an exponent needs a dot and a sign, as
    in 1.0e+3)`` for a number setting written so, else "".

    ``source_timeout_s: 1e3`` said "expected float, got str" of what every language but
    YAML 1.1 reads as 1000 (``1.0e3`` too is text there; ``1.0e+3`` is a float). For a
    whole-number setting the hint is the number itself (``batch_size: 1e3``: write 1000).
    """
    found = _FLOAT_EXPECTED.fullmatch(message)
    node = _value_node(text, found[1]) if found else None
    if not isinstance(node, yaml.ScalarNode) or node.style is not None:
        return ""
    number = _EXPONENT.fullmatch(node.value)
    if number is None or not (number[2] or number[3]) or len(number[5]) > 3:
        return ""  # (an exponent of 4 digits or more is no number a setting can take)
    if found is not None and found[2] == "int":
        value = Decimal(node.value)  # exactly: a float of 17 digits is not the number written
        if value != value.to_integral_value() or abs(value) > 10**18:
            return ""
        return f" (YAML reads {node.value} as text: write {int(value)})"
    if not math.isfinite(float(node.value)):  # 1e999: YAML would read 1.0e+999 as .inf
        return ""
    sign, whole, fraction, exponent_sign, exponent = number.groups()
    instead = f"{sign}{whole or '0'}.{fraction or '0'}e{exponent_sign or '+'}{exponent}"
    return (
        f" (YAML reads {node.value} as text: a number with an exponent needs a dot and a "
        f"sign, as in {instead})"
    )


def _not_octal_hint(text: str, message: str) -> str:
    """`` (YAML reads 08 as text: a leading 0 makes a number octal, and 8 and 9 are no
    octal digits: write 8)`` for a number setting written with a leading 0, else "".

    ``pad_numbers: 08`` said "expected int, got str" of what reads as a number to anyone
    but YAML 1.1 (``010`` is refused with its octal value, see ``_yaml11_message``).
    """
    found = _NUMBER_EXPECTED.fullmatch(message)
    node = _value_node(text, found[1]) if found else None
    if not isinstance(node, yaml.ScalarNode) or node.style is not None:
        return ""
    if not _NOT_OCTAL.fullmatch(node.value):
        return ""
    digits = node.value.replace("_", "")
    sign = "-" if digits.startswith("-") else ""
    instead = sign + (digits.lstrip("+-").lstrip("0") or "0")
    return (
        f" (YAML reads {node.value} as text: a leading 0 makes a number octal, and 8 and 9 "
        f"are no octal digits: write {instead})"
    )


def _text_hint(text: str, message: str) -> str:
    """`` (YAML reads no as false: quote it, 'no', if it is text)`` for a text setting
    written as a plain word YAML takes for something else, else "".

    ``key_column: no`` or ``path: 2024`` said "expected str, got bool": true, but a
    column named ``no`` is text to its writer, and the remedy (quotes) was left unsaid.
    """
    found = _TEXT_EXPECTED.fullmatch(message)
    if not found:
        return ""
    node = _value_node(text, found[1])
    if not isinstance(node, yaml.ScalarNode) or node.style is not None or not node.value:
        return ""  # quoted already, or nothing written (null: a value is missing)
    value = yaml.safe_load(node.value)
    if isinstance(value, bool):
        read = str(value).lower()
    elif isinstance(value, (int, float)):
        read = f"the number {value}"
    else:
        read = "a date"
    return f" (YAML reads {node.value} as {read}: quote it, '{node.value}', if it is text)"


def check_null_is_written(text: str, setting: str) -> None:
    """Refuse a ``setting`` that is null because nothing was written after its colon.

    ``collapse_delims: #`` (``#`` starts a comment) and ``{collapse_delims: ,}`` (``,``
    ends the value) read as null, which turns the step off and gives every key another
    form, silently; null is not the default here. Written ``null`` (or ``~``), it is meant.
    """
    node = _value_node(text, setting)
    if isinstance(node, yaml.ScalarNode) and node.style is None and node.value == "":
        raise ConfigError(
            f"{setting}: no value is written (YAML reads a # after the colon as a comment, "
            "and a , in {...} as the end of the value): write null to turn the step off, or "
            "the character in quotes ('#', ',')"
        )


def line_of(text: str, setting: str) -> int | None:
    """The line that writes ``setting`` (``processing.batch_size``), or the deepest part of
    it that the file gives (``sources.B`` for a missing ``sources.B.path``); None if none.

    An error names a setting; in a long file the line finds it at once. The document is
    composed again (only on an error) for its nodes, which know their lines.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for part in setting.split("."):
        entry = _entry(node, part)
        if entry is None:
            break
        key, node = entry
        line = key.start_mark.line + 1
    return line


def _value_node(text: str, setting: str) -> yaml.Node | None:
    """The node ``setting`` (``normalize.collapse_delims``) is written with, or None."""
    try:
        node: yaml.Node | None = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    for part in setting.split("."):
        entry = _entry(node, part)
        if entry is None:
            return None
        node = entry[1]
    return node


def _entry(node: yaml.Node | None, name: str) -> tuple[yaml.Node, yaml.Node] | None:
    """The (key, value) nodes of ``name`` in a mapping node, if it is written there (a key
    that a merge key ``<<: *base`` brings in is not: the line is then its mapping's)."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == name:
                return key, value
    return None
