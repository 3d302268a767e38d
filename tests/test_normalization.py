"""The key rules of SPEC.md "Normalization": the table, each step, and properties.

The properties compare ``keysync.normalization`` with ``reference_normalize``, a
slow, obviously-correct transcription of SPEC.md written here independently, so
the fast paths (the one-regex check for keys already in normal form, and the
joined-batch check) are held to the plain rules on any input and any valid rule
configuration.
"""

from __future__ import annotations

import json
import os
import re
import string
import subprocess
import sys
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from keysync.config import NormalizeConfig
from keysync.normalization import _normal_form_pattern, compile_rules

if TYPE_CHECKING:
    from conftest import RunKeysync

DEFAULT = NormalizeConfig()
PAD6 = NormalizeConfig(pad_numbers=6)
DEFAULT_OUTPUT = re.compile(r"[A-Z0-9]+(-[A-Z0-9]+)*")

# --- the table of SPEC.md ------------------------------------------------------------

SPEC_TABLE = [
    # raw, default rules, with pad_numbers: 6  ("" = rejected as empty-key)
    ("  cust_00123 ", "CUST-00123", "CUST-000123"),
    ("prod..abc//789", "PROD-ABC-789", "PROD-ABC-000789"),
    ("Txn-2024-001", "TXN-2024-001", "TXN-002024-000001"),
    ("CUST-#-12", "CUST-12", "CUST-000012"),
    ("café 7", "CAFE-7", "CAFE-000007"),
    ("#!?", "", ""),
]


@pytest.mark.parametrize(("raw", "expected", "_padded"), SPEC_TABLE)
def test_spec_table_default_rules(raw: str, expected: str, _padded: str) -> None:
    assert compile_rules(DEFAULT).normalize(raw) == expected


@pytest.mark.parametrize(("raw", "_default", "expected"), SPEC_TABLE)
def test_spec_table_pad_numbers_6(raw: str, _default: str, expected: str) -> None:
    assert compile_rules(PAD6).normalize(raw) == expected


def test_spec_table_as_one_batch() -> None:
    raws = [raw for raw, _, _ in SPEC_TABLE]
    assert compile_rules(DEFAULT).normalize_many(raws) == [row[1] for row in SPEC_TABLE]
    assert compile_rules(PAD6).normalize_many(raws) == [row[2] for row in SPEC_TABLE]


# --- each step on its own ------------------------------------------------------------

NOTHING = {
    "trim": False,
    "ascii_fold": False,
    "uppercase": False,
    "collapse_delims": None,
    "strip_non_alnum": False,
    "pad_numbers": 0,
}


def only(**step: object) -> NormalizeConfig:
    """Rules with every step off except the given ones."""
    return NormalizeConfig(**{**NOTHING, **step})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rules", "raw", "expected"),
    [
        pytest.param(only(), "  a_B é ", "  a_B é ", id="all-off-is-identity"),
        pytest.param(only(trim=True), " \t ab c\u00a0\n", "ab c", id="trim"),
        pytest.param(only(ascii_fold=True), "Café", "Cafe", id="fold-accent"),
        pytest.param(only(ascii_fold=True), "ﬁ Ⅻ ①", "fi XII 1", id="fold-compatibility"),
        pytest.param(only(ascii_fold=True), "Straße", "Straße", id="fold-keeps-letters"),
        pytest.param(only(uppercase=True), "ab-c_d", "AB-C_D", id="uppercase"),
        pytest.param(only(collapse_delims="-"), "a__b..c / d", "a-b-c-d", id="collapse"),
        pytest.param(only(collapse_delims="_"), "a--b", "a_b", id="collapse-other-char"),
        pytest.param(
            only(collapse_delims="-", delimiters="."), "a.b_c", "a-b_c", id="collapse-delimiters"
        ),
        pytest.param(only(strip_non_alnum=True), "A#b-C9é", "AC9", id="strip-no-separator"),
        pytest.param(
            only(strip_non_alnum=True, collapse_delims="-", delimiters=""),
            "-A-#-B--",
            "A-B",
            id="strip-recollapses-and-trims-separator",
        ),
        pytest.param(only(pad_numbers=3), "A7-12-1234", "A007-012-1234", id="pad"),
        pytest.param(only(pad_numbers=1), "A7", "A7", id="pad-1-changes-nothing"),
        pytest.param(only(pad_numbers=3), "x٣", "x٣", id="pad-only-ascii-digits"),
    ],
)
def test_each_step_in_isolation(rules: NormalizeConfig, raw: str, expected: str) -> None:
    normalizer = compile_rules(rules)
    assert normalizer.normalize(raw) == expected
    assert normalizer.normalize_many([raw]) == [expected]


def test_steps_run_in_spec_order() -> None:
    # Fold before uppercase before collapse before strip before pad.
    assert compile_rules(PAD6).normalize(" ｃａｆé／／ｘ－٣ 12 ") == "CAFE-X-000012"


def test_trim_leaves_no_whitespace_that_folding_creates() -> None:
    # NFKD("´") is " " + a combining accent: after folding, a space sits at an end.
    rules = only(trim=True, ascii_fold=True)
    assert compile_rules(rules).normalize("´a´") == "a"
    assert compile_rules(rules).normalize("´") == ""


def test_trim_leaves_no_whitespace_that_collapsing_creates() -> None:
    rules = only(trim=True, collapse_delims=" ")
    assert compile_rules(rules).normalize("--a--b--") == "a b"


def test_key_with_newline_in_a_batch_is_not_taken_for_two_keys() -> None:
    # The batch fast path joins keys with "\n"; a key holding "\n" must not fool it.
    normalizer = compile_rules(DEFAULT)
    raws = ["CUST-1\nCUST-2", "PROD-ABC-789"]
    assert normalizer.normalize_many(raws) == ["CUST-1CUST-2", "PROD-ABC-789"]
    assert normalizer.normalize_many(["A", "\n", "B"]) == ["A", "", "B"]


@pytest.mark.parametrize("width", [2, 6])
def test_long_keys_that_are_not_normal_are_refused_fast(width: int) -> None:
    # The normal-form regex once split letter runs in 2^n ways: 30 letters took minutes.
    normalizer = compile_rules(NormalizeConfig(pad_numbers=width))
    raws = ["A" * 200 + "a", "CUST" + "7" * 300 + "x", "-".join(["AB12"] * 100) + "#"]
    started = time.perf_counter()
    keys = [normalizer.normalize(raw) for raw in raws] + normalizer.normalize_many(raws)
    assert time.perf_counter() - started < 1.0
    assert keys[0] == "A" * 201 and keys[1] == "CUST" + "7" * 300 + "X"


def test_empty_batch() -> None:
    assert compile_rules(DEFAULT).normalize_many([]) == []


# --- properties ----------------------------------------------------------------------


def reference_normalize(raw: str, rules: NormalizeConfig) -> str:
    """SPEC.md "Normalization" step by step, char by char: slow and plain on purpose."""
    text = raw
    if rules.trim:
        text = text.strip()
    if rules.ascii_fold:
        text = unicodedata.normalize("NFKD", text)
        text = "".join(ch for ch in text if not unicodedata.combining(ch))
    if rules.uppercase:
        text = text.upper()
    separator = rules.collapse_delims
    if separator is not None:
        out: list[str] = []
        in_run = False
        for ch in text:
            if ch in rules.delimiters:
                if not in_run:
                    out.append(separator)
                in_run = True
            else:
                out.append(ch)
                in_run = False
        text = "".join(out)
    if rules.strip_non_alnum:
        kept = string.ascii_uppercase + string.digits + (separator or "")
        text = "".join(ch for ch in text if ch in kept)
        if separator:
            parts = [part for part in text.split(separator) if part]
            text = separator.join(parts)
    if rules.trim:
        # keysync trims again at the end so that trim holds for the result (see docs).
        text = text.strip()
    if rules.pad_numbers > 0:
        width = rules.pad_numbers
        text = re.sub("[0-9]+", lambda m: m.group().rjust(width, "0"), text)
    return text


# Characters that tend to break key rules: NUL, surrogates, combining marks, emoji,
# right-to-left text and marks, compatibility forms, full-width ASCII, spacing accents
# (NFKD gives a space), chars whose uppercase is longer ("ß", "ŉ"), line separators.
SPECIAL_CHARS = list(
    "\x00\ud800\udfff\u0301\u0308\u200b\u200d\u202e\u2066\u00a0\u2028\u3000\ufeff"
    "😀👍🏽🇫🇷אבגمرحبا١٢٣٣ﬁﬀⅫ①²ＡＢＣ１２３／－＿´¨¸˜ßŉǰΐİıſ\r\n\t\x0b\x1c"
)
KEY_CHARS = list(string.ascii_letters + string.digits + " \t-_./:|\\#!?@,;") + SPECIAL_CHARS

any_text = st.one_of(
    st.text(),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=12),
    st.text(st.sampled_from(KEY_CHARS), max_size=24),
    st.from_regex(r"[A-Z]{1,4}([-_. ]{1,2}[0-9A-Za-z]{1,6}){0,3}", fullmatch=True),
)

# A valid configuration (config.py rejects the rest): separators are ASCII punctuation
# or a space; delimiters are anything but ASCII letters and digits.
separators = st.none() | st.sampled_from(list(string.punctuation + " "))
delimiter_sets = st.one_of(
    st.just(DEFAULT.delimiters),
    st.text(
        st.sampled_from(list(" \t-_./:|\\#,;~*+=·–—／\u00a0\u3000")),
        max_size=6,
    ),
    st.text(st.characters(exclude_characters=string.ascii_letters + string.digits), max_size=4),
)
rule_sets = st.builds(
    NormalizeConfig,
    trim=st.booleans(),
    ascii_fold=st.booleans(),
    uppercase=st.booleans(),
    collapse_delims=separators,
    delimiters=delimiter_sets,
    strip_non_alnum=st.booleans(),
    pad_numbers=st.integers(min_value=0, max_value=8),
)


@given(any_text)
@example("´")
@example("CUST-00123")
def test_default_rules_are_idempotent(raw: str) -> None:
    normalize = compile_rules(DEFAULT).normalize
    once = normalize(raw)
    assert normalize(once) == once


@given(rule_sets, any_text)
@example(NormalizeConfig(strip_non_alnum=False), "´x")
@example(NormalizeConfig(strip_non_alnum=False, collapse_delims=" "), "-x")
def test_any_rules_are_idempotent(rules: NormalizeConfig, raw: str) -> None:
    normalize = compile_rules(rules).normalize
    once = normalize(raw)
    assert normalize(once) == once


@given(any_text)
def test_default_output_is_in_normal_form_or_empty(raw: str) -> None:
    key = compile_rules(DEFAULT).normalize(raw)
    assert key == "" or DEFAULT_OUTPUT.fullmatch(key)


@given(rule_sets, any_text)
def test_never_raises_and_follows_the_spec(rules: NormalizeConfig, raw: str) -> None:
    assert compile_rules(rules).normalize(raw) == reference_normalize(raw, rules)


@given(rule_sets, any_text)
def test_the_trace_of_keysync_normalize_steps_ends_in_the_key(
    rules: NormalizeConfig, raw: str
) -> None:
    """`keysync normalize --steps` shows the rules one by one: they must add up to the key,
    and name the rules that are on, in SPEC order."""
    trail = compile_rules(rules).trace(raw)
    assert (trail[-1][1] if trail else raw) == reference_normalize(raw, rules)
    is_on = {
        "trim": rules.trim,
        "ascii_fold": rules.ascii_fold,
        "uppercase": rules.uppercase,
        "collapse_delims": rules.collapse_delims is not None,
        "strip_non_alnum": rules.strip_non_alnum,
        "pad_numbers": rules.pad_numbers > 0,
    }
    named = [rule for name, _ in trail for rule in name.split(" + ")]
    assert all(is_on[rule] for rule in named)
    spec_order = list(is_on)
    firsts = [spec_order.index(rule) for rule in named if rule != "trim"]
    assert firsts == sorted(firsts)


@given(rule_sets, st.lists(any_text, max_size=8))
def test_normalize_many_equals_normalize_each(rules: NormalizeConfig, raws: list[str]) -> None:
    normalizer = compile_rules(rules)
    assert normalizer.normalize_many(raws) == [normalizer.normalize(raw) for raw in raws]


@given(st.data())
@settings(deadline=None)  # draws from_regex inside the test: slow on a busy machine
def test_batch_fast_path_with_normal_keys_and_newlines(data: st.DataObject) -> None:
    """Mostly normal keys (so the joined-batch regex runs), sometimes holding a "\\n"."""
    rules = data.draw(rule_sets)
    normalizer = compile_rules(rules)
    pattern = _normal_form_pattern(rules)
    normal_keys = st.from_regex(pattern, fullmatch=True) if pattern else st.just("A1")
    keys = st.one_of(
        normal_keys,
        st.tuples(normal_keys, st.sampled_from(["\n", "\n\n", "-\n"]), normal_keys).map("".join),
    )
    raws = data.draw(st.lists(keys, min_size=1, max_size=6))
    assert normalizer.normalize_many(raws) == [reference_normalize(r, rules) for r in raws]


@given(st.data())
@settings(deadline=None)  # draws from_regex inside the test: slow on a busy machine
def test_fast_path_is_only_taken_when_correct(data: st.DataObject) -> None:
    """Whatever the normal-form regex accepts, the step-by-step rules give back unchanged."""
    rules = data.draw(rule_sets)
    pattern = _normal_form_pattern(rules)
    if pattern is None:
        return
    key = data.draw(st.from_regex(pattern, fullmatch=True))
    assert reference_normalize(key, rules) == key
    assert compile_rules(rules).normalize(key) == key


@given(rule_sets, any_text)
def test_fast_path_regex_matches_only_fixed_points(rules: NormalizeConfig, raw: str) -> None:
    """The same property from the other side: arbitrary text, matched or not."""
    pattern = _normal_form_pattern(rules)
    if pattern is not None and re.fullmatch(pattern, raw):
        assert reference_normalize(raw, rules) == raw


# ------------------------------------------------------------- keysync normalize, config check


def test_keysync_normalize_shows_each_key_as_the_configured_rules_make_it(
    tmp_path: Path, keysync: RunKeysync, write_config: Callable[..., Path]
) -> None:
    """An architect tries rules on sample keys before a run: arguments, stdin, --json."""
    write_config(tmp_path, processing={"max_key_length": 14})
    shown = keysync("normalize", "  cust_00123 ", "café 7", "#!?", "K-1234567890123", "a\tb")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        "RAW                KEY",
        "'  cust_00123 '    CUST-00123",
        "'café 7'           CAFE-7",
        "'#!?'              rejected, empty-key: the key normalizes to nothing: the rules "
        "keep only ASCII A-Z and 0-9 (joined by '-')",
        "'K-1234567890123'  rejected, too-long: key has 15 characters, the limit is 14 "
        "(processing.max_key_length)",
        "'a\\tb'             A-B",
    ]
    piped = keysync("normalize", "--json", input="prod..abc//789\r\n\nTxn-2024-001\n")
    assert json.loads(piped.stdout) == [
        {"raw": "prod..abc//789", "key": "PROD-ABC-789", "rejected": None},
        {"raw": "Txn-2024-001", "key": "TXN-2024-001", "rejected": None},
    ]


def test_keysync_normalize_says_which_keys_come_out_of_several_raw_forms(
    tmp_path: Path, keysync: RunKeysync, write_config: Callable[..., Path]
) -> None:
    """Seen (journeys hunt): its help says keys that come out equal are one key, but three
    raw forms under pad_numbers 6 all showing CUST-000012 were marked nowhere."""
    write_config(tmp_path, normalize={"pad_numbers": 6})
    raws = ["CUST-#-12", "cust 12", "CUST-000012", "x", "x", "y_1", "Y-1"]
    shown = keysync("normalize", *raws)
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == (
        "2 keys come out of more than one raw form, which a run takes as one key (a "
        "collision): CUST-000012 (3 raw forms), Y-000001 (2 raw forms)\n"
    )
    assert keysync("-q", "normalize", *raws).stderr == ""
    assert keysync("normalize", "x", "x", "Y").stderr == ""  # the same raw twice: no collision
    # Seen (review): a raw form repeated was counted again, "CUST-001 (4 raw forms)" for two;
    # and --json left the note out.
    repeated = keysync("normalize", "--json", "cust_001", "CUST-001", "CUST-001", "CUST-001")
    assert repeated.stderr == (
        "1 key comes out of more than one raw form, which a run takes as one key (a "
        "collision): CUST-000001 (2 raw forms)\n"
    )
    assert [row["key"] for row in json.loads(repeated.stdout)] == ["CUST-000001"] * 4


@pytest.mark.parametrize(
    ("rules", "raw", "why"),
    [
        pytest.param({}, "漢字", "the rules keep only ASCII A-Z and 0-9 (joined by '-')", id="cjk"),
        pytest.param(
            {}, "١٢٣", "the rules keep only ASCII A-Z and 0-9 (joined by '-')", id="arabic"
        ),
        pytest.param(
            {"uppercase": False, "collapse_delims": None},
            "abc",
            "the rules keep only ASCII A-Z and 0-9",
            id="uppercase-off",
        ),
        pytest.param(
            {"strip_non_alnum": False, "collapse_delims": None},
            " \u00b4 ",
            "it is empty or only whitespace, once folded",
            id="blank",
        ),
        pytest.param(
            {"strip_non_alnum": False, "trim": False, "ascii_fold": False},
            "",
            "it is empty",
            id="empty-untrimmed",
        ),
        pytest.param(  # seen (review): "it is empty" of a combining accent, which folds away
            {"strip_non_alnum": False, "trim": False},
            "\u0301",
            "it is empty, once folded",
            id="folded-away-untrimmed",
        ),
    ],
)
def test_an_empty_key_says_what_the_rules_keep(
    tmp_path: Path,
    keysync: RunKeysync,
    write_config: Callable[..., Path],
    rules: dict[str, object],
    raw: str,
    why: str,
) -> None:
    """Seen: every empty-key said "(no letters or digits)", also of 漢字, ١٢٣ and of abc
    with uppercase off, which are letters and digits the rules removed."""
    write_config(tmp_path, normalize=rules)
    shown = keysync("normalize", "--json", "--", raw)
    assert shown.returncode == 0, shown.stderr
    (result,) = json.loads(shown.stdout)
    assert result["rejected"] == f"empty-key: the key normalizes to nothing: {why}"


def test_keysync_normalize_streams_a_long_stdin_and_drops_its_bom(
    tmp_path: Path, keysync: RunKeysync, write_config: Callable[..., Path]
) -> None:
    """Seen (scale hunt): 1M keys piped in took 4 GB with --steps, all held to size the
    table; and a BOM at the start of stdin became part of the first key, where a file
    read drops it (rules hunt)."""
    write_config(tmp_path, normalize={"strip_non_alnum": False})
    lines = ["\ufeffa b", *(f"cust {n}" for n in range(12_000)), "x" * 70]
    shown = keysync("normalize", input="\n".join(lines) + "\n").stdout.splitlines()
    assert len(shown) == 1 + len(lines)
    assert shown[1].split() == ["'a", "b'", "A-B"]
    starts = {line.index("CUST-") for line in shown if "CUST-" in line}
    assert starts == {62}  # past 10,000 rows: the raw column as wide as any cell may be
    assert shown[-1].startswith("'" + "x" * 58 + "…  X")
    piped = keysync("normalize", "--json", input="\ufeffa\n")
    assert json.loads(piped.stdout) == [{"raw": "a", "key": "A", "rejected": None}]


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_keysync_normalize_rejects_a_line_of_stdin_that_is_not_utf8_as_a_run_would(
    tmp_path: Path, write_config: Callable[..., Path], locale: str
) -> None:
    """Seen (a new user's walkthrough): `ab\\xffc` piped in showed 'ab\\udcffc' -> ABC
    without a word, where a run rejects the row (encoding) and an argument so is refused."""
    write_config(tmp_path)
    env = {**os.environ, "LC_ALL": locale, "PYTHONUTF8": "0"}
    shown = subprocess.run(
        [sys.executable, "-m", "keysync", "normalize", "--json"],
        cwd=tmp_path,
        env={k: v for k, v in env.items() if not k.startswith("KEYSYNC_")},
        input=b"ab\xffc\nok\n",
        capture_output=True,
        check=True,
    )
    assert json.loads(shown.stdout) == [
        {
            "raw": "ab\\xffc",
            "key": None,
            "rejected": "encoding: byte 0xFF at byte 3 is not valid UTF-8",
        },
        {"raw": "ok", "key": "OK", "rejected": None},
    ]
    table = subprocess.run(
        [sys.executable, "-m", "keysync", "normalize"],
        cwd=tmp_path,
        env={k: v for k, v in env.items() if not k.startswith("KEYSYNC_")},
        input=b"ab\xffc\n",
        capture_output=True,
        check=True,
    )
    assert table.stdout.decode().splitlines()[1].split("  ", 1) == [
        "'ab\\xffc'",
        "rejected, encoding: byte 0xFF at byte 3 is not valid UTF-8",
    ]


def test_keysync_normalize_steps_names_each_rule_of_the_config(
    tmp_path: Path, keysync: RunKeysync, write_config: Callable[..., Path]
) -> None:
    write_config(tmp_path, normalize={"pad_numbers": 6})
    shown = keysync("normalize", "--steps", " Café 7 ")
    assert shown.stdout.splitlines() == [
        "RAW / RULE                           KEY",
        "' Café 7 '                           CAFE-000007",
        "  trim                               'Café 7'",
        "  ascii_fold                         'Cafe 7'",
        "  uppercase                          'CAFE 7'",
        "  collapse_delims + strip_non_alnum  'CAFE-7'",
        "  pad_numbers                        'CAFE-000007'",
    ]


def test_config_check_warns_of_a_delimiter_the_steps_before_it_change(
    tmp_path: Path, keysync: RunKeysync, write_config: Callable[..., Path]
) -> None:
    """Seen (hunt): `delimiters: " -／"` passed `config check`, and `A／B` became `AB`:
    ascii_fold makes the fullwidth slash '/' before the delimiter step sees it."""

    def warnings() -> list[str]:
        checked = keysync("config", "check")
        assert checked.returncode == 0, checked.stderr
        return [line for line in checked.stdout.splitlines() if line.startswith("# warning")]

    write_config(tmp_path, normalize={"delimiters": " -\uff0f\u0301"})
    assert warnings() == [
        "# warning: normalize.delimiters: '\uff0f' (U+FF0F) never matches: ascii_fold makes "
        "it '/' first; add '/' to the delimiters",
        "# warning: normalize.delimiters: '\u0301' (U+0301) never matches: ascii_fold deletes "
        "it first; take it out of the delimiters",
    ]
    assert keysync("normalize", "A\uff0fB").stdout.split()[-1] == "AB"
    write_config(tmp_path, normalize={"delimiters": " -\uff0f/\u00b4"})  # as advised
    assert warnings() == []
    assert keysync("normalize", "A\uff0fB").stdout.split()[-1] == "A-B"
    write_config(tmp_path, normalize={"delimiters": " -\uff0f", "ascii_fold": False})
    assert not [w for w in warnings() if "delimiters" in w]  # matched as written
    assert keysync("normalize", "A\uff0fB").stdout.split()[-1] == "A-B"


def test_config_check_warns_of_rules_that_delete_letters(
    tmp_path: Path, keysync: RunKeysync, write_config: Callable[..., Path]
) -> None:
    """Seen: `uppercase: false` passed `config check`, and then `cust_00123` became `00123`."""
    write_config(tmp_path, normalize={"uppercase": False})
    checked = keysync("config", "check")
    assert checked.returncode == 0, checked.stderr
    assert [line for line in checked.stdout.splitlines() if line.startswith("# warning")] == [
        "# warning: normalize.uppercase is false and strip_non_alnum keeps only A-Z and 0-9: "
        "every lower-case letter is deleted ('Cust_12' becomes 'C-12'); try keys with "
        "`keysync normalize`"
    ]
    write_config(tmp_path, normalize={"uppercase": False, "strip_non_alnum": False})
    assert "# warning" not in keysync("config", "check").stdout
    for separator in ("--", "::"):  # runs collapse; ':' is a delimiter: never in a key
        write_config(tmp_path, provisioning={"namespace_separator": separator})
        assert "# warning" not in keysync("config", "check").stdout, separator
    # A namespace separator keys can hold: B's key X-1 and the key B-X-1 share a name.
    write_config(tmp_path, provisioning={"namespace_separator": "-"})
    checked = keysync("config", "check").stdout.splitlines()
    (warning,) = [line for line in checked if line.startswith("# warning: ")]
    assert warning.startswith(
        "# warning: provisioning.namespace_separator '-' can be part of a key "
        "(normalize.collapse_delims, strip_non_alnum): a namespaced master key such as "
        "'B-X-1' could also be a key"
    )
    assert warning.endswith("a separator keys cannot hold, such as ':', avoids it")
    # Seen (rules hunt): the example and the advice ignored the rules they warned of.
    checks = [  # (normalize, separator, the warning's end, or None for no warning)
        (
            {"collapse_delims": ":"},
            ":",
            "'B:X:1' could also be a key, and after a strategy "
            "switch one of them would get no master key of its own; a separator keys cannot "
            "hold, such as '/', avoids it",
        ),
        (
            {"strip_non_alnum": False, "collapse_delims": None},
            ":",
            "'B:X1' could also be a "
            "key, and after a strategy switch one of them would get no master key of its own; "
            "with these rules keys can hold any separator: strip_non_alnum: true avoids it",
        ),
        ({"strip_non_alnum": False}, ":", None),  # ':' is a delimiter, made '-'
    ]
    for rules, separator, end in checks:
        write_config(tmp_path, normalize=rules, provisioning={"namespace_separator": separator})
        said = [
            line
            for line in keysync("config", "check").stdout.splitlines()
            if line.startswith("# warning: provisioning.namespace_separator")
        ]
        assert said[0].endswith(end) if end else said == [], (rules, said)
