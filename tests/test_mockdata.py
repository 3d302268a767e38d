"""The mock data generator: ground truth, reproducibility, scenarios, corruption.

The manifest is checked against an independent reading of the files that
follows the reader contract (/work/briefs/reader-contract.md) line by line, so
a wrong line number, a miscounted record or a mislabelled corruption fails
here rather than in a later pipeline test.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keysync.config import Config, NormalizeConfig, parse_config
from keysync.errors import ConfigError, KeysyncError
from keysync.mockdata import generate, stalled_system
from keysync.mockdata import generator as generator_module
from keysync.mockdata.corruption import ERROR_TYPES
from keysync.mockdata.scenarios import failure_day, recovery_days, target_match_rate
from keysync.mockdata.variants import VARIANT_KINDS, unquote
from keysync.normalization import compile_rules

SPEC_RATES = {"normal": 0.8, "drift": 0.5, "failure": 0.3, "recovery": 0.8}  # state on day D of D
CANONICAL_SAMPLES = [
    "CUST-00042",
    "CUST-12345",
    "CUST-99999",
    "PROD-ABC-789",
    "PROD-ZYX-001",
    "PROD-EIO-500",
    "TXN-2024-001",
    "TXN-2015-99999",
    "TXN-2026-1000",
]


def make_config(tmp_path: Path, **sections: Any) -> Config:
    return parse_config(sections, tmp_path)


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@dataclass
class ContractRead:
    """What a reader following the contract sees in one file."""

    rows_read: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    valid: list[tuple[int, str, str]] = field(default_factory=list)  # (line, raw, normalized)
    last_seen: list[str] = field(default_factory=list)  # timestamp cell of each valid row


def contract_read(path: Path, config: Config, delimiter: str = ",") -> ContractRead:
    """Read ``path`` exactly as the reader contract says (independent of the generator)."""
    normalizer = compile_rules(config.normalize)
    lines = path.read_bytes().split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    header = next(csv.reader([lines[0].decode()], delimiter=delimiter))
    result = ContractRead()
    i = 1
    while i < len(lines):
        first = lines[i].rstrip(b"\r")
        start = i + 1
        if first == b"":
            i += 1
            continue
        result.rows_read += 1
        record, end = first, i + 1
        while record.count(b'"') % 2 and end < len(lines) and end - i < 100:
            record += b"\n" + lines[end].rstrip(b"\r")
            end += 1
        if b"\x00" in record:
            result.rejected.append((start, "nul-byte"))
            i = end
            continue
        try:
            text = record.decode("utf-8")
        except UnicodeDecodeError:
            result.rejected.append((start, "encoding"))
            i = end
            continue
        try:
            rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
        except csv.Error:
            result.rejected.append((start, "bad-quoting"))
            i += 1
            continue
        assert len(rows) == 1, (start, text)
        cells = rows[0]
        i = end
        if len(cells) != len(header):
            result.rejected.append(
                (start, "extra-cell" if len(cells) > len(header) else "missing-cell")
            )
            continue
        raw = cells[0]
        if len(raw) > config.processing.max_key_length:
            result.rejected.append((start, "too-long"))
            continue
        key = normalizer.normalize(raw)
        if not key:
            result.rejected.append((start, "empty-key"))
            continue
        result.valid.append((start, raw, key))
        result.last_seen.append(cells[2])
    return result


def assert_manifest_matches_files(out: Path, config: Config) -> dict[str, Any]:
    """Every system section of ``out/manifest.json`` equals a contract reading of its file."""
    manifest = load(out / "manifest.json")
    for name, section in manifest["systems"].items():
        read = contract_read(out / section["file"], config, config.sources[name].delimiter)
        assert section["rows_read"] == read.rows_read, name
        assert [(r["line"], r["error_type"]) for r in section["rejected"]] == read.rejected, name
        assert section["keys"] == sorted({key for _, _, key in read.valid}), name
        occurrences: dict[str, list[tuple[int, str]]] = {}
        for line, raw, key in read.valid:
            occurrences.setdefault(key, []).append((line, raw))
        expected_duplicates = {
            key: {
                "lines": [line for line, _ in occ],
                "distinct_raw_keys": len({raw for _, raw in occ}),
                "collision": len({raw for _, raw in occ}) > 1,
            }
            for key, occ in occurrences.items()
            if len(occ) > 1
        }
        assert section["duplicates"] == expected_duplicates, name
        if manifest["first_lines_stored"]:
            assert section["first_lines"] == {key: occ[0][0] for key, occ in occurrences.items()}
        assert section["unique_keys"] == len(section["keys"])
        assert section["duplicate_keys"] == len(section["duplicates"])
        assert section["rows_rejected"] == len(section["rejected"])
    return manifest


def peer_counts(manifest: dict[str, Any], peer: str) -> tuple[int, int, int]:
    a = set(manifest["systems"][manifest["authority"]]["keys"])
    x = set(manifest["systems"][peer]["keys"])
    return len(a & x), len(x - a), len(a - x)


def assert_rates(manifest: dict[str, Any], rate: float, tolerance: float = 0.05) -> None:
    """Every peer's counts, recomputed from the key lists, agree with the manifest and ``rate``."""
    peers = [name for name in manifest["systems"] if name != manifest["authority"]]
    for peer in peers:
        section = manifest["systems"][peer]
        matched, only_peer, only_a = peer_counts(manifest, peer)
        union = matched + only_peer + only_a
        assert (section["matched"], section["missing_in_a"], section["missing_from_system"]) == (
            matched,
            only_peer,
            only_a,
        )
        assert section["match_rate"] == round(matched / union, 4)
        assert abs(matched / union - rate) <= tolerance, (peer, matched / union, rate)
        for share in (only_peer / union, only_a / union):
            assert abs(share - (1 - rate) / 2) <= tolerance, (peer, share)


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --- ground truth ---------------------------------------------------------------------


def test_manifest_matches_a_contract_reading_of_every_file(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    generate(config, keys=3000, out=tmp_path / "out")
    manifest = assert_manifest_matches_files(tmp_path / "out", config)
    assert manifest["format_version"] == 1
    assert manifest["seed"] == 42 and manifest["scenario"] == "normal"
    assert manifest["keys_per_system"] == 3000
    assert list(manifest["systems"]) == ["A", "B", "C", "D", "E"]
    for section in manifest["systems"].values():
        assert section["unique_keys"] == 3000  # corruption never removes a valid key


@pytest.mark.parametrize(
    "sections",
    [
        {"normalize": {"pad_numbers": 6}},
        {"normalize": {"uppercase": False, "collapse_delims": None}},
        {"normalize": {"strip_non_alnum": False}},
        {"processing": {"max_key_length": 14}},
        {
            "sources": {
                "A": {"path": "a.csv", "delimiter": ";"},
                "B": {"path": "b.csv", "delimiter": "|", "key_column": "id"},
                "C": {"path": "c.csv", "delimiter": " "},
                "D": {"path": "d.csv", "delimiter": "\t"},
                "E": {"path": "e.csv", "delimiter": "-", "timestamp_column": "seen"},
                "F": {"path": "f.csv", "delimiter": ":"},
            }
        },
    ],
    ids=["pad-numbers", "no-uppercase", "keep-non-alnum", "short-max-length", "delimiters"],
)
def test_manifest_stays_true_under_custom_rules_and_dialects(
    tmp_path: Path, sections: dict[str, Any]
) -> None:
    config = make_config(tmp_path, **sections)
    generate(config, keys=1500, seed=7, out=tmp_path / "out")
    manifest = assert_manifest_matches_files(tmp_path / "out", config)
    for section in manifest["systems"].values():
        assert {r["error_type"] for r in section["rejected"]} == set(ERROR_TYPES)


@settings(max_examples=25, deadline=None)
@given(
    keys=st.integers(min_value=1, max_value=80),
    days=st.integers(min_value=1, max_value=4),
    scenario=st.sampled_from(["normal", "drift", "failure", "recovery"]),
    seed=st.integers(min_value=0, max_value=10**9),
    rate=st.sampled_from([0.0, 0.01, 0.3]),
    peers=st.integers(min_value=1, max_value=4),
)
def test_tiny_runs_of_any_shape_keep_the_manifest_true(
    tmp_path_factory: pytest.TempPathFactory,
    keys: int,
    days: int,
    scenario: str,
    seed: int,
    rate: float,
    peers: int,
) -> None:
    folder = tmp_path_factory.mktemp("tiny")
    sources = {name: {"path": f"{name}.csv"} for name in "ABCDE"[: peers + 1]}
    config = make_config(
        folder, sources=sources, simulation={"failures": {"inject_corruption": rate}}
    )
    generate(config, keys=keys, days=days, scenario=scenario, seed=seed, out=folder / "out")
    manifest = assert_manifest_matches_files(folder / "out", config)
    assert all(s["unique_keys"] == keys for s in manifest["systems"].values())
    assert all(t["matched"] + t["missing_in_a"] == keys for t in manifest["targets"])


def test_short_max_key_length_rejects_long_valid_keys_as_too_long(tmp_path: Path) -> None:
    config = make_config(tmp_path, processing={"max_key_length": 12})
    generate(config, keys=1000, out=tmp_path / "out")
    manifest = assert_manifest_matches_files(tmp_path / "out", config)
    # PROD-ABC-789 has 12 characters, "  prod..abc//789 " more: some rows become too-long.
    assert manifest["systems"]["A"]["error_types"]["too-long"] > 50


def test_default_config_writes_to_the_source_paths(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    result = generate(config, keys=1000)
    for name in "ABCDE":
        assert (tmp_path / "input" / f"{name}.csv").is_file()
        assert result.files[name] == tmp_path / "input" / f"{name}.csv"
    assert result.manifest == tmp_path / "input" / "manifest.json"
    assert not (tmp_path / "input" / "history").exists()
    assert load(result.manifest)["systems"]["B"]["file"] == "B.csv"
    assert sorted(p.name for p in (tmp_path / "input").iterdir()) == [
        "A.csv",
        "B.csv",
        "C.csv",
        "D.csv",
        "E.csv",
        "manifest.json",
    ]


# --- keys, variants, duplicates -------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(VARIANT_KINDS))
def test_every_variant_kind_normalizes_to_its_canonical_key(kind: str) -> None:
    normalizer = compile_rules(NormalizeConfig())
    make = VARIANT_KINDS[kind]
    for key in CANONICAL_SAMPLES:
        assert normalizer.normalize(key) == key
        for sub in range(0, 1 << 14, 97):
            raw = unquote(make(key, sub))
            assert raw != key, (kind, key, sub)
            assert normalizer.normalize(raw) == key, (kind, key, sub, raw)


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(CANONICAL_SAMPLES),
    kind=st.sampled_from(sorted(VARIANT_KINDS)),
    sub=st.integers(min_value=0, max_value=2**46),
)
def test_variants_normalize_back_for_any_random_bits(key: str, kind: str, sub: int) -> None:
    raw = unquote(VARIANT_KINDS[kind](key, sub))
    assert compile_rules(NormalizeConfig()).normalize(raw) == key


def test_written_keys_are_mostly_canonical_with_every_variant_kind(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    generate(config, keys=10_000, out=tmp_path / "out")
    read = contract_read(tmp_path / "out" / "B.csv", config)
    canonical = sum(raw == key for _, raw, key in read.valid)
    assert 0.65 <= canonical / len(read.valid) <= 0.75
    raws = [raw for _, raw, key in read.valid if raw != key]
    assert any(raw == raw.lower() and "_" in raw for raw in raws)  # cust_12345
    assert any(raw != raw.strip() for raw in raws)  # surrounding spaces
    assert any(raw[:1] in "=-+@" for raw in raws)  # formula guard
    assert any(not raw.isascii() and "§" not in raw and "°" not in raw for raw in raws)  # accents
    assert any("#" in raw for raw in raws)
    data = (tmp_path / "out" / "B.csv").read_bytes()
    assert b'\n"cust ' in data or b'\n"prod ' in data or b'\n"txn ' in data  # quoted keys


def test_duplicates_are_one_to_two_percent_with_exact_copies_and_collisions(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    generate(config, keys=20_000, out=tmp_path / "out")
    manifest = load(tmp_path / "out" / "manifest.json")
    for section in manifest["systems"].values():
        duplicates = section["duplicates"]
        assert 0.01 <= len(duplicates) / section["unique_keys"] <= 0.02
        collisions = [d for d in duplicates.values() if d["collision"]]
        exact = [d for d in duplicates.values() if not d["collision"]]
        assert collisions and exact
        assert all(d["distinct_raw_keys"] == 2 for d in collisions)
        assert all(d["distinct_raw_keys"] == 1 for d in exact)


def test_exact_duplicates_repeat_the_whole_row(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    generate(config, keys=5000, out=tmp_path / "out")
    lines = (tmp_path / "out" / "C.csv").read_bytes().split(b"\n")
    duplicates = load(tmp_path / "out" / "manifest.json")["systems"]["C"]["duplicates"]
    for entry in duplicates.values():
        first, second = entry["lines"]
        if entry["collision"]:
            assert lines[first - 1].split(b",")[0] != lines[second - 1].split(b",")[0]
        else:
            assert lines[first - 1] == lines[second - 1]


def test_peers_share_some_out_of_authority_keys(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    generate(config, keys=10_000, out=tmp_path / "out")
    manifest = load(tmp_path / "out" / "manifest.json")
    a = set(manifest["systems"]["A"]["keys"])
    own = {p: set(manifest["systems"][p]["keys"]) - a for p in "BCDE"}
    shared = own["B"] & (own["C"] | own["D"] | own["E"])
    assert 0.1 * len(own["B"]) <= len(shared) <= 0.5 * len(own["B"])


def test_keys_look_like_the_three_formats(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    generate(config, keys=5000, out=tmp_path / "out")
    keys = load(tmp_path / "out" / "manifest.json")["systems"]["A"]["keys"]
    families = {key.split("-")[0] for key in keys}
    assert families == {"CUST", "PROD", "TXN"}
    for key in keys:
        parts = key.split("-")
        if parts[0] == "CUST":
            assert len(parts) == 2 and len(parts[1]) == 5 and parts[1].isdigit()
        elif parts[0] == "PROD":
            assert len(parts) == 3 and parts[1].isalpha() and len(parts[1]) == 3
            assert len(parts[2]) == 3 and parts[2].isdigit()
        else:
            assert len(parts) == 3 and 2015 <= int(parts[1]) <= 2026
            assert len(parts[2]) >= 3 and parts[2].isdigit()


# --- corruption and line numbers ------------------------------------------------------


def test_every_error_type_appears_at_1k_keys_and_each_line_holds_its_corruption(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    generate(config, keys=1000, out=tmp_path / "out")
    manifest = load(tmp_path / "out" / "manifest.json")
    normalizer = compile_rules(config.normalize)
    for name, section in manifest["systems"].items():
        assert {r["error_type"] for r in section["rejected"]} == set(ERROR_TYPES), name
        lines = (tmp_path / "out" / section["file"]).read_bytes().split(b"\n")
        for entry in section["rejected"]:
            line = lines[entry["line"] - 1]
            kind = entry["error_type"]
            if kind == "nul-byte":
                assert b"\x00" in line
                continue
            assert b"\x00" not in line
            if kind == "encoding":
                with pytest.raises(UnicodeDecodeError):
                    line.decode("utf-8")
                assert len(line.split(b",")) == 3
                continue
            text = line.decode("utf-8")
            if kind == "bad-quoting":
                with pytest.raises(csv.Error):
                    list(csv.reader([text], strict=True))
                continue
            cells = next(csv.reader([text], strict=True))
            if kind == "extra-cell":
                assert len(cells) == 4
            elif kind == "missing-cell":
                assert len(cells) < 3
            elif kind == "too-long":
                assert len(cells) == 3 and len(cells[0]) > 256 and cells[0].isalnum()
            else:
                assert kind == "empty-key"
                assert len(cells) == 3 and normalizer.normalize(cells[0]) == ""


def test_corruption_rate_and_blank_lines_follow_inject_corruption(tmp_path: Path) -> None:
    config = make_config(tmp_path, simulation={"failures": {"inject_corruption": 0.05}})
    generate(config, keys=4000, out=tmp_path / "out")
    manifest = load(tmp_path / "out" / "manifest.json")
    for section in manifest["systems"].values():
        valid_rows = section["rows_read"] - section["rows_rejected"]
        assert section["rows_rejected"] == round(0.05 * valid_rows)
        assert section["blank_lines"] >= 10

    clean = make_config(tmp_path, simulation={"failures": {"inject_corruption": 0.0}})
    generate(clean, keys=1000, out=tmp_path / "clean")
    for section in load(tmp_path / "clean" / "manifest.json")["systems"].values():
        assert section["rejected"] == [] and section["blank_lines"] == 0
    assert b"\n\n" not in (tmp_path / "clean" / "A.csv").read_bytes()


def test_line_numbers_count_blank_lines_and_multiline_names(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    generate(config, keys=3000, out=tmp_path / "out")
    manifest = load(tmp_path / "out" / "manifest.json")
    normalizer = compile_rules(config.normalize)
    multiline_total = 0
    for name, section in manifest["systems"].items():
        data = (tmp_path / "out" / section["file"]).read_bytes()
        lines = data.split(b"\n")
        assert section["physical_lines"] == len(lines) - 1
        assert section["blank_lines"] == sum(1 for line in lines[1:-1] if line == b"")
        multiline_total += section["multiline_records"]
        # Every key's first line really starts a row whose key cell normalizes to it.
        for key, line in section["first_lines"].items():
            cell = next(csv.reader([lines[line - 1].decode("utf-8")]))[0]
            assert normalizer.normalize(cell) == key, (name, key, line)
        # The last key's line is shifted by duplicates, corrupt rows, blanks and multi-line rows.
        assert max(section["first_lines"].values()) > section["unique_keys"] + 1
    assert multiline_total >= 5


def test_timestamps_lie_within_the_days_of_history_before_a_fixed_snapshot(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, simulation={"temporal": {"days_of_history": 10}})
    generate(config, keys=2000, days=2, out=tmp_path / "out")
    manifest = load(tmp_path / "out" / "manifest.json")
    assert manifest["reference_date"] == "2026-11-01"
    assert manifest["snapshot_at"] == "2026-11-02T02:00:00Z"
    # Day 2 of the run is 2026-11-02; rows were last seen on one of the 10 days before it.
    first, snapshot_date = datetime(2026, 10, 23, tzinfo=timezone.utc), datetime(2026, 11, 2)
    stamps = contract_read(tmp_path / "out" / "D.csv", config).last_seen
    seen = [
        datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        for stamp in stamps
    ]
    assert all(first <= moment < first + timedelta(days=10) for moment in seen)
    assert len({moment.date() for moment in seen}) == 10
    assert snapshot_date.date() - timedelta(days=1) == max(seen).date()


# --- reproducibility ------------------------------------------------------------------


def run_generate(folder: Path, hash_seed: str, *args: str) -> None:
    config = folder / "keysync-config.yaml"
    config.write_text("simulation: {seed: 42}\n", encoding="utf-8")
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    subprocess.run(
        [sys.executable, "-m", "keysync", "-c", str(config), "generate", *args, "--out", "out"],
        cwd=folder,
        env=env,
        check=True,
        capture_output=True,
    )


def test_same_seed_gives_byte_identical_files_in_separate_processes(tmp_path: Path) -> None:
    first, second, other = tmp_path / "first", tmp_path / "second", tmp_path / "other"
    for folder in (first, second, other):
        folder.mkdir()
    run_generate(first, "1", "--keys", "3000", "--days", "3", "--scenario", "drift")
    run_generate(second, "987654", "--keys", "3000", "--days", "3", "--scenario", "drift")
    hashes = file_hashes(first / "out")
    assert len(hashes) == 3 * 6 + 6
    assert hashes == file_hashes(second / "out")

    run_generate(other, "1", "--keys", "3000", "--days", "3", "--scenario", "drift", "--seed", "43")
    different = file_hashes(other / "out")
    assert different.keys() == hashes.keys()
    assert all(different[name] != hashes[name] for name in hashes)


def test_helper_process_writes_the_same_bytes_as_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path)
    generate(config, keys=5000, days=2, scenario="failure", out=tmp_path / "serial")
    answers: list[list[tuple[str, Any]]] = []
    answer_of_helper = generator_module._helper_answer

    def recording_answer(*args: Any) -> list[tuple[str, Any]]:
        answers.append(answer_of_helper(*args))
        return answers[-1]

    monkeypatch.setattr(generator_module, "PARALLEL_MIN_KEYS", 1)
    monkeypatch.setattr(generator_module, "_helper_answer", recording_answer)
    # Earlier tests in the same pytest process may leave idle daemon threads (log relays),
    # which make the generator refuse to fork; this test is about the bytes, not that guard.
    monkeypatch.setattr(generator_module.threading, "active_count", lambda: 1)
    generate(config, keys=5000, days=2, scenario="failure", out=tmp_path / "parallel")
    assert [[name for name, _ in day] for day in answers] == [["C", "D", "E"]] * 2, "no helper"
    assert file_hashes(tmp_path / "serial") == file_hashes(tmp_path / "parallel")


def _generate_in_a_daemon(config: Any, out: Path) -> None:
    generator_module.PARALLEL_MIN_KEYS = 1  # this forked child's copy: parallel from 1 key
    generator_module.threading.active_count = lambda: 1  # type: ignore[assignment]
    generate(config, keys=2000, days=2, out=out)


def test_a_daemonic_process_generates_without_a_helper_of_its_own(tmp_path: Path) -> None:
    """Seen (scale hunt): `simulate --days 2` with 200,000 keys per system exited 3 with
    "daemonic processes are not allowed to have children": simulate generates its series
    in a daemonic process, and from 200,000 keys on the generator forked a helper."""
    config = make_config(tmp_path)
    daemon = multiprocessing.get_context("fork").Process(
        target=_generate_in_a_daemon, args=(config, tmp_path / "daemon"), daemon=True
    )
    daemon.start()
    daemon.join(60)
    assert daemon.exitcode == 0
    generate(config, keys=2000, days=2, out=tmp_path / "here")
    assert file_hashes(tmp_path / "daemon") == file_hashes(tmp_path / "here")


def test_a_failure_in_the_helper_process_keeps_the_helpers_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the helper's half is raised in the main process with the helper's frames."""
    build = generator_module._Run.build

    def build_failing_for_d(run: Any, system: str, day: int) -> Any:
        if system == "D" and os.getpid() != main_pid:
            raise ValueError("bad day for D")
        return build(run, system, day)

    main_pid = os.getpid()
    monkeypatch.setattr(generator_module, "PARALLEL_MIN_KEYS", 1)
    monkeypatch.setattr(generator_module._Run, "build", build_failing_for_d)
    monkeypatch.setattr(generator_module.threading, "active_count", lambda: 1)
    with pytest.raises(ValueError, match="bad day for D") as raised:
        generate(make_config(tmp_path), keys=2000, days=2, out=tmp_path / "out")
    cause = raised.value.__cause__
    assert isinstance(cause, generator_module.HelperTraceback)
    assert "in _build_in_helper" in str(cause) and 'raise ValueError("bad day for D")' in str(cause)


def test_default_size_is_drawn_from_the_seed(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    sizes = {generate(config, seed=s, out=tmp_path / str(s)).keys_per_system for s in (1, 2, 3)}
    assert all(1000 <= size <= 5000 for size in sizes) and len(sizes) > 1
    again = generate(config, seed=1, out=tmp_path / "again").keys_per_system
    assert again == generate(config, seed=1, out=tmp_path / "1").keys_per_system
    fixed = make_config(tmp_path, simulation={"keys_per_system": 1234})
    assert generate(fixed, out=tmp_path / "fixed").keys_per_system == 1234


# --- scenarios ------------------------------------------------------------------------


@pytest.mark.parametrize("keys", [1000, 10_000, pytest.param(100_000, marks=pytest.mark.slow)])
@pytest.mark.parametrize("scenario", ["normal", "drift", "failure", "recovery"])
def test_scenario_rates_are_within_5_percent_of_the_spec(
    tmp_path: Path, scenario: str, keys: int
) -> None:
    config = make_config(tmp_path)
    generate(config, keys=keys, scenario=scenario, out=tmp_path / "out")
    manifest = load(tmp_path / "out" / "manifest.json")
    assert manifest["target"]["match_rate"] == SPEC_RATES[scenario]
    assert_rates(manifest, SPEC_RATES[scenario])


def history_rates(out: Path, days: int) -> list[dict[str, float]]:
    rates = []
    for day in range(1, days + 1):
        manifest = load(out / "history" / f"day-{day:02d}" / "manifest.json")
        assert manifest["day"] == day
        rates.append({p: s["match_rate"] for p, s in manifest["systems"].items() if p != "A"})
    return rates


def test_drift_falls_steadily_from_normal_to_half(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    generate(config, keys=2000, scenario="drift", days=10, out=tmp_path / "out")
    rates = history_rates(tmp_path / "out", 10)
    for peer in "BCDE":
        series = [day[peer] for day in rates]
        assert all(later < earlier for earlier, later in pairwise(series)), series
        assert abs(series[0] - 0.8) <= 0.05 and abs(series[-1] - 0.5) <= 0.05


def test_failure_drops_about_50_points_on_its_day_and_stays(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    generate(config, keys=2000, scenario="failure", days=10, out=tmp_path / "out")
    rates = history_rates(tmp_path / "out", 10)
    drop = failure_day(10)
    assert drop == 5
    for peer in "BCDE":
        series = [day[peer] for day in rates]
        assert all(abs(rate - 0.8) <= 0.05 for rate in series[: drop - 1])
        assert abs((series[drop - 2] - series[drop - 1]) - 0.5) <= 0.05
        assert all(abs(rate - 0.3) <= 0.05 for rate in series[drop - 1 :])


def test_a_two_day_failure_is_normal_then_failed(tmp_path: Path) -> None:
    """The smallest series a QA engineer tries must show the drop, not two failed days."""
    config = make_config(tmp_path)
    generate(config, keys=1000, scenario="failure", days=2, out=tmp_path / "out")
    for day, rate in zip((1, 2), (0.8, 0.3)):
        assert_rates(load(tmp_path / "out" / "history" / f"day-{day:02d}" / "manifest.json"), rate)


@pytest.mark.parametrize("days", range(2, 13))
def test_every_scenario_of_several_days_starts_normal_and_ends_in_its_state(days: int) -> None:
    for scenario, last in SPEC_RATES.items():
        assert target_match_rate(scenario, days, days) == pytest.approx(last)
        if scenario != "recovery" or days >= 3:  # recovery needs three days: 80, 30, 80
            assert target_match_rate(scenario, 1, days) == 0.8


def test_recovery_fails_then_returns_to_normal(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    generate(config, keys=2000, scenario="recovery", days=9, out=tmp_path / "out")
    rates = history_rates(tmp_path / "out", 9)
    drop, back = recovery_days(9)
    assert (drop, back) == (4, 7)
    for peer in "BCDE":
        series = [day[peer] for day in rates]
        assert all(abs(rate - 0.8) <= 0.05 for rate in series[: drop - 1])
        assert abs(series[drop - 1] - 0.3) <= 0.05
        assert series[drop - 1] < series[drop] < series[back - 2] < series[back - 1]
        assert all(abs(rate - 0.8) <= 0.05 for rate in series[back - 1 :])


def test_one_day_failure_is_the_failed_state(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    generate(config, keys=1000, scenario="failure", out=tmp_path / "out")
    assert_rates(load(tmp_path / "out" / "manifest.json"), 0.3)


def test_history_is_a_plausible_series(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    generate(config, keys=5000, days=4, out=tmp_path / "out")
    history = tmp_path / "out" / "history"
    for day in (1, 2, 3):
        today = load(history / f"day-{day:02d}" / "manifest.json")["systems"]
        tomorrow = load(history / f"day-{day + 1:02d}" / "manifest.json")["systems"]
        for name in "ABCDE":
            before, after = set(today[name]["keys"]), set(tomorrow[name]["keys"])
            assert before != after
            assert len(before & after) >= 0.95 * len(before), name
            rows_before = set(
                (history / f"day-{day:02d}" / f"{name}.csv").read_bytes().splitlines()
            )
            rows_after = (history / f"day-{day + 1:02d}" / f"{name}.csv").read_bytes().splitlines()
            unchanged = sum(row in rows_before for row in rows_after)
            assert unchanged >= 0.8 * len(rows_after), name


def test_days_write_history_and_the_last_day_on_top(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    result = generate(config, keys=1000, days=3, scenario="drift", out=tmp_path / "out")
    out = tmp_path / "out"
    assert [p.name for p in result.history] == ["day-01", "day-02", "day-03"]
    assert sorted(p.name for p in (out / "history").iterdir()) == ["day-01", "day-02", "day-03"]
    for day in ("day-01", "day-02", "day-03"):
        names = sorted(p.name for p in (out / "history" / day).iterdir())
        assert names == ["A.csv", "B.csv", "C.csv", "D.csv", "E.csv", "manifest.json"]
    for name in ["A.csv", "B.csv", "C.csv", "D.csv", "E.csv", "manifest.json"]:
        assert (out / name).read_bytes() == (out / "history" / "day-03" / name).read_bytes()
    manifest = load(out / "manifest.json")
    assert (manifest["day"], manifest["days"]) == (3, 3)
    assert [t["match_rate"] for t in manifest["targets"]] == [0.8, 0.65, 0.5]
    assert_manifest_matches_files(out / "history" / "day-01", config)


def test_a_shorter_run_removes_the_history_it_does_not_rewrite(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    out = tmp_path / "out"
    generate(config, keys=1000, days=4, out=out)
    (out / "history" / "notes.txt").write_text("mine", encoding="utf-8")
    generate(config, keys=1000, days=2, out=out)
    assert sorted(p.name for p in (out / "history").iterdir()) == ["day-01", "day-02", "notes.txt"]
    (out / "history" / "notes.txt").unlink()
    generate(config, keys=1000, out=out)
    assert not (out / "history").exists()


# --- timeouts, errors, summary --------------------------------------------------------


def test_stalled_system_is_a_seeded_peer_only_when_timeouts_are_simulated(tmp_path: Path) -> None:
    off = make_config(tmp_path)
    assert stalled_system(off) is None
    chosen = {
        stalled_system(
            make_config(tmp_path, simulation={"seed": seed, "failures": {"simulate_timeout": True}})
        )
        for seed in range(20)
    }
    assert chosen <= {"B", "C", "D", "E"} and len(chosen) > 1
    on = make_config(tmp_path, simulation={"seed": 5, "failures": {"simulate_timeout": True}})
    generate(on, keys=1000, out=tmp_path / "out")
    assert load(tmp_path / "out" / "manifest.json")["stalled_system"] == stalled_system(on)


@pytest.mark.parametrize(
    ("kwargs", "sections", "message"),
    [
        ({"keys": 0}, {}, "keys per system must be at least 1"),
        ({"days": 0}, {}, "days must be at least 1"),
        ({"scenario": "chaos"}, {}, "unknown scenario 'chaos'"),
        ({}, {"sources": {"A": {"path": "a"}, "B": {"path": "b", "encoding": "latin-1"}}}, "UTF-8"),
        ({"keys": 50_000_000}, {}, "too many for the mock key formats"),
    ],
)
def test_bad_arguments_are_one_clear_error(
    tmp_path: Path, kwargs: dict[str, Any], sections: dict[str, Any], message: str
) -> None:
    config = make_config(tmp_path, **sections)
    with pytest.raises(KeysyncError, match=message) as error:
        generate(config, out=tmp_path / "out", **kwargs)
    assert error.value.exit_code == 2
    assert not (tmp_path / "out").exists()
    assert isinstance(error.value, ConfigError) or "too many" in message


@pytest.mark.parametrize(
    ("scenario", "days"), [("normal", 1), ("drift", 30), ("recovery", 3660), ("failure", 7)]
)
def test_the_most_keys_a_refusal_names_are_accepted_and_one_more_is_not(
    scenario: str, days: int
) -> None:
    """Seen (mock-data hunt): `--keys 1000000000 --scenario drift --days 30` said "use at
    most 2,362,266", which was refused in its turn (the most was 2,362,250), and never
    named --days, which is what cut the limit from 6.2M to 48K at 3,660 days."""
    with pytest.raises(KeysyncError) as refused:
        generator_module._check_capacity(10**9, days, scenario, 4)
    most = int(str(refused.value).split("use at most ")[1].split()[0].replace(",", ""))
    generator_module._check_capacity(most, days, scenario, 4)
    with pytest.raises(KeysyncError):
        generator_module._check_capacity(most + 1, days, scenario, 4)
    assert ("fewer days" in str(refused.value)) == (days > 1)
    assert "--keys, or simulation.keys_per_system" in str(refused.value)


def test_describe_summarises_what_was_written(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    result = generate(config, keys=1000, days=2, seed=9, out=tmp_path / "out")
    text = result.describe()
    assert "scenario normal, seed 9, 1,000 keys per system, 2 days" in text
    for name in "ABCDE":
        assert str(result.files[name]) in text
        assert f"{result.rows_read[name]:,} rows" in text
    assert f"manifest: {result.manifest}" in text
    assert "history:" in text and "day-02" in text
