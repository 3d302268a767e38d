"""Availability: a missing authority (exit 3), a missing or silent peer (exit 4), subsets."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conftest import RunKeysync
from test_accuracy import read_report


def generated(
    tmp_path: Path, keysync: RunKeysync, write_config: Callable[..., Path], **cfg: object
) -> Path:
    config = write_config(tmp_path, **cfg)
    assert keysync("-q", "-c", str(config), "generate", "--keys", "1000").returncode == 0
    return config


def test_missing_authority_exits_3_with_one_line(
    tmp_path: Path, keysync: RunKeysync, write_config: Callable[..., Path]
) -> None:
    config = generated(tmp_path, keysync, write_config)
    (tmp_path / "input" / "A.csv").unlink()
    done = keysync("-q", "-c", str(config), "run")
    assert done.returncode == 3
    assert done.stderr.splitlines()[-1] == (
        f"keysync: error: the authority A is unavailable: {tmp_path / 'input' / 'A.csv'}: "
        "file not found (sources.A.path)"
    )
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "output" / "reconciliation_summary.csv").exists()


def test_authority_without_key_column_exits_3(
    tmp_path: Path, keysync: RunKeysync, write_config: Callable[..., Path]
) -> None:
    config = generated(tmp_path, keysync, write_config)
    (tmp_path / "input" / "A.csv").write_text("id,name\n1,x\n")
    done = keysync("-q", "-c", str(config), "run")
    assert done.returncode == 3
    assert "header has no column 'key' (columns: id, name); set sources.A.key_column" in (
        done.stderr
    )


def test_no_peer_available_exits_3(
    tmp_path: Path, keysync: RunKeysync, write_config: Callable[..., Path]
) -> None:
    config = generated(tmp_path, keysync, write_config)
    for name in "BCDE":
        (tmp_path / "input" / f"{name}.csv").unlink()
    done = keysync("-q", "-c", str(config), "run")
    assert done.returncode == 3
    assert done.stderr.splitlines()[-1].startswith("keysync: error: no peer of A is available (B: ")


def test_missing_peer_is_reported_unavailable_and_exits_4(
    tmp_path: Path, keysync: RunKeysync, write_config: Callable[..., Path]
) -> None:
    config = generated(tmp_path, keysync, write_config)
    (tmp_path / "input" / "C.csv").unlink()
    done = keysync("-q", "-c", str(config), "run", "--fail-on-diff")
    assert done.returncode == 4
    assert "keysync: degraded: C unavailable, not compared" in done.stderr
    summary = {
        r["system"]: r for r in read_report(tmp_path / "output" / "reconciliation_summary.csv")
    }
    assert summary["C"]["available"] == "false"
    assert all(summary["C"][c] == "" for c in ("rows_read", "matched", "match_rate"))
    gaps = read_report(tmp_path / "output" / "diff_missing_from_system.csv")
    assert gaps and "C" not in {r["system"] for r in gaps}


def test_a_silent_peer_times_out_and_the_run_is_degraded(
    tmp_path: Path, keysync: RunKeysync, write_config: Callable[..., Path]
) -> None:
    config = generated(
        tmp_path,
        keysync,
        write_config,
        simulation={"failures": {"simulate_timeout": True}},
        processing={"source_timeout_s": 1},
    )
    stalled = json.loads((tmp_path / "input" / "manifest.json").read_text())["stalled_system"]
    done = keysync("-c", str(config), "run")
    assert done.returncode == 4, done.stderr
    summary = {
        r["system"]: r for r in read_report(tmp_path / "output" / "reconciliation_summary.csv")
    }
    assert summary[stalled]["available"] == "false"
    assert [s for s, r in summary.items() if r["available"] == "false"] == [stalled]
    assert "no data for 1 s (processing.source_timeout_s)" in done.stdout + done.stderr


def test_systems_option_reconciles_a_subset(
    tmp_path: Path, keysync: RunKeysync, write_config: Callable[..., Path]
) -> None:
    config = generated(tmp_path, keysync, write_config)
    done = keysync("-q", "-c", str(config), "run", "--systems", "C")
    assert done.returncode == 0, done.stderr
    summary = read_report(tmp_path / "output" / "reconciliation_summary.csv")
    assert [r["system"] for r in summary] == ["A", "C"]
    done = keysync("-q", "-c", str(config), "run", "--systems", "A,X")
    assert done.returncode == 2
    assert "--systems: unknown system X (configured: A, B, C, D, E)" in done.stderr
