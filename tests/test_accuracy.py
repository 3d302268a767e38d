"""Accuracy: for every scenario and size, the reports equal the manifest's ground truth.

End to end through the real command: ``keysync generate`` writes the inputs and
``manifest.json``; ``keysync run`` (multiprocess) must report exactly every
out-of-authority pair, every gap, every duplicate with its lines, and every
rejected line with its error type.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import RunKeysync


def read_report(path: Path) -> list[dict[str, str]]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line[:1] != "#"]
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


def check_reports_against_manifest(output: Path, manifest: dict[str, Any]) -> None:
    systems = manifest["systems"]
    authority = manifest["authority"]
    a_keys = set(systems[authority]["keys"])
    peers = [s for s in systems if s != authority]

    summary = {row["system"]: row for row in read_report(output / "reconciliation_summary.csv")}
    assert list(summary) == [authority, *sorted(peers)]
    for name, truth in systems.items():
        row = summary[name]
        assert row["available"] == "true"
        for column in ("rows_read", "rows_rejected", "unique_keys", "duplicate_keys"):
            assert int(row[column]) == truth[column], (name, column)
        if name != authority:
            for column in ("matched", "missing_in_a", "missing_from_system"):
                assert int(row[column]) == truth[column], (name, column)
            assert float(row["match_rate"]) == pytest.approx(truth["match_rate"], abs=1e-4)

    missing_in_a = read_report(output / "diff_missing_in_A.csv")
    expected = sorted((key, peer) for peer in peers for key in set(systems[peer]["keys"]) - a_keys)
    assert [(r["key"], r["system"]) for r in missing_in_a] == expected
    if manifest["first_lines_stored"]:
        for row in missing_in_a:
            assert int(row["source_line"]) == systems[row["system"]]["first_lines"][row["key"]]

    gaps = read_report(output / "diff_missing_from_system.csv")
    expected = sorted((peer, key) for peer in peers for key in a_keys - set(systems[peer]["keys"]))
    assert [(r["system"], r["key"]) for r in gaps] == expected

    duplicates = read_report(output / "duplicates.csv")
    expected_duplicates = [
        (name, key, str(len(d["lines"])), str(d["distinct_raw_keys"]),
         "true" if d["collision"] else "false", ";".join(map(str, d["lines"])))
        for name in [authority, *sorted(peers)]
        for key, d in sorted(systems[name]["duplicates"].items())
    ]  # fmt: skip
    got = [
        (r["system"], r["key"], r["occurrences"], r["distinct_raw_keys"], r["collision"],
         r["source_lines"])
        for r in duplicates
    ]  # fmt: skip
    assert sorted(got) == sorted(expected_duplicates)

    rejected = read_report(output / "rejected_rows.csv")
    expected_rejected = sorted(
        (name, r["line"], r["error_type"]) for name in systems for r in systems[name]["rejected"]
    )
    assert [(r["system"], int(r["line"]), r["error_type"]) for r in rejected] == expected_rejected


# 100k: the same check on ten times the rows (34 s of the suite), with the stress runs.
SIZES = [1_000, 10_000, pytest.param(100_000, marks=pytest.mark.slow)]


@pytest.mark.parametrize("scenario", ["normal", "drift", "failure", "recovery"])
@pytest.mark.parametrize("keys", SIZES)
def test_reports_equal_the_ground_truth(
    tmp_path: Path,
    keysync: RunKeysync,
    write_config: Callable[..., Path],
    scenario: str,
    keys: int,
) -> None:
    config = write_config(tmp_path, simulation={"scenario": scenario, "seed": keys + 1})
    done = keysync("-q", "-c", str(config), "generate", "--keys", str(keys), timeout=300)
    assert done.returncode == 0, done.stderr
    done = keysync("-q", "-c", str(config), "run", timeout=300)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "input" / "manifest.json").read_text())
    check_reports_against_manifest(tmp_path / "output", manifest)


def test_normal_rates_are_80_10_10(
    tmp_path: Path, keysync: RunKeysync, write_config: Callable[..., Path]
) -> None:
    config = write_config(tmp_path)
    assert keysync("-q", "-c", str(config), "run", "--keys", "5000").returncode == 0
    summary = read_report(tmp_path / "output" / "reconciliation_summary.csv")
    for row in summary[1:]:
        union = int(row["matched"]) + int(row["missing_in_a"]) + int(row["missing_from_system"])
        assert abs(int(row["matched"]) / union - 0.80) <= 0.05
        assert abs(int(row["missing_in_a"]) / union - 0.10) <= 0.05
        assert abs(int(row["missing_from_system"]) / union - 0.10) <= 0.05


def test_every_process_layout_gives_identical_reports(
    tmp_path: Path, keysync: RunKeysync, write_config: Callable[..., Path]
) -> None:
    """One process, readers that normalize, separate normalizer workers: the same rows."""
    layouts = {
        "sequential": {"parallel": False},
        "readers-normalize": {"parallel": True},
        "normalizer-workers": {"parallel": True, "workers": 2},
    }
    reports = {}
    for name, processing in layouts.items():
        folder = tmp_path / name
        config = write_config(folder, processing={**processing, "batch_size": 137})
        assert keysync("-q", "-c", str(config), "generate", "--keys", "3000").returncode == 0
        assert keysync("-q", "-c", str(config), "run").returncode == 0
        reports[name] = {
            report: [
                # Only the paths of the input files and the clock differ between folders.
                {k: v for k, v in row.items() if k not in ("file", "missing_since")}
                for row in read_report(folder / "output" / report)
            ]
            for report in (
                "reconciliation_summary.csv",
                "diff_missing_in_A.csv",
                "diff_missing_from_system.csv",
                "duplicates.csv",
                "rejected_rows.csv",
            )
        }
    assert reports["readers-normalize"] == reports["sequential"]
    assert reports["normalizer-workers"] == reports["sequential"]
