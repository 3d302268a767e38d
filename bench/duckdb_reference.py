"""The DuckDB reference: keysync's job as one SQL script, the bar to beat.

Reads the five CSVs of a keysync config, normalizes every key with the rules
of SPEC.md written in SQL (with the fast path of DESIGN.md "Performance":
keys already in normal form skip the regexes), groups by (system, key) keeping
the first raw form and timestamp and the count, compares every peer with the
authority and writes the two lists a user reads first: keys missing in A
(out-of-authority) and propagation gaps, sorted like keysync's reports.

DuckDB is a bench-only dependency (``pip install -e '.[bench]'``)::

    python bench/duckdb_reference.py -c keysync-config.yaml --out /tmp/duck-out
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import duckdb

from keysync.config import NormalizeConfig, load_config


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def normalize_sql(rules: NormalizeConfig, column: str = "key") -> str:
    """SPEC.md "Normalization" as a SQL expression over ``column`` (default rules and kin)."""
    if rules.pad_numbers or not rules.strip_non_alnum or not rules.uppercase:
        raise SystemExit("duckdb_reference: only strip_non_alnum + uppercase rules, no padding")
    sep = rules.collapse_delims or ""
    text = column
    if rules.trim:
        text = f"trim({text})"
    if rules.ascii_fold:
        text = f"strip_accents({text})"
    text = f"upper({text})"
    if sep:
        delimiters = "".join(re.escape(c) for c in rules.delimiters)
        text = f"regexp_replace({text}, {_sql_string(f'[{delimiters}]+')}, {_sql_string(sep)}, 'g')"
    kept = f"[^A-Z0-9{re.escape(sep)}]"
    text = f"regexp_replace({text}, {_sql_string(kept)}, '', 'g')"
    if sep:
        runs = f"{re.escape(sep)}{{2,}}"
        text = f"trim(regexp_replace({text}, {_sql_string(runs)}, {_sql_string(sep)}, 'g'), "
        text += f"{_sql_string(sep)})"
        normal = f"[A-Z0-9]+({re.escape(sep)}[A-Z0-9]+)*"
    else:
        normal = "[A-Z0-9]+"
    # The fast path: most keys are already normal, one full match and no regexp_replace.
    fast = f"regexp_full_match({column}, {_sql_string(normal)})"
    return f"CASE WHEN {fast} THEN {column} ELSE {text} END"


def run_reference(config_path: Path, out: Path, threads: int | None = None) -> dict[str, float]:
    """Do the job; returns phase timings in seconds."""
    config = load_config(config_path)
    authority = config.authority
    systems = list(config.sources)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    reads = []
    for system in systems:
        source = config.sources[system]
        path = config.source_path(system)
        key = f'"{source.key_column}"'
        stamp = f'"{source.timestamp_column}"'
        reads.append(
            f"SELECT {_sql_string(system)} AS system, {key} AS key, {stamp} AS ts "
            f"FROM read_csv({_sql_string(str(path))}, header = true, all_varchar = true, "
            f"delim = {_sql_string(source.delimiter)}, ignore_errors = true, strict_mode = false)"
        )
    normalized = normalize_sql(config.normalize)
    con.execute(
        f"""
        CREATE TABLE keys AS
        SELECT system, {normalized} AS k, first(key) AS raw, first(ts) AS ts, count(*) AS n
        FROM ({" UNION ALL ".join(reads)})
        WHERE key IS NOT NULL
        GROUP BY ALL
        HAVING k <> ''
        """
    )
    loaded = time.perf_counter()
    a = _sql_string(authority)
    con.execute(
        f"""
        COPY (
            SELECT p.k AS key, p.system, p.raw AS source_key, p.ts AS last_seen_at
            FROM keys p ANTI JOIN (SELECT k FROM keys WHERE system = {a}) a USING (k)
            WHERE p.system <> {a}
            ORDER BY key, p.system
        ) TO {_sql_string(str(out / "diff_missing_in_A.csv"))} (HEADER)
        """
    )
    con.execute(
        f"""
        COPY (
            SELECT a.k AS key, s.system, a.raw AS a_source_key, a.ts AS a_last_seen_at
            FROM (SELECT * FROM keys WHERE system = {a}) a
            CROSS JOIN (SELECT DISTINCT system FROM keys WHERE system <> {a}) s
            ANTI JOIN keys p ON p.k = a.k AND p.system = s.system
            ORDER BY s.system, key
        ) TO {_sql_string(str(out / "diff_missing_from_system.csv"))} (HEADER)
        """
    )
    done = time.perf_counter()
    con.close()
    return {"load_s": loaded - started, "compare_write_s": done - loaded, "total_s": done - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", type=Path, default=Path("keysync-config.yaml"))
    parser.add_argument("--out", type=Path, required=True, help="folder for the two lists")
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all)")
    args = parser.parse_args(argv)
    timings = run_reference(args.config, args.out, args.threads)
    print(" ".join(f"{name}={value:.2f}" for name, value in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
