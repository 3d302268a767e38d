#!/usr/bin/env bash
# keysync in two commands:
#   ./run.sh        set up .venv, generate mock data, reconcile, print the summary
#   ./run.sh test   set up .venv with the dev tools, run ruff, mypy and pytest
# Extra arguments after `test` go to pytest (e.g. ./run.sh test -m slow).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv

ensure_venv() {
    local extra=$1 stamp="$VENV/.installed$1"
    if [ ! -x "$VENV/bin/python" ]; then
        command -v "$PYTHON" >/dev/null 2>&1 \
            || { echo "run.sh: $PYTHON not found; install Python 3.10+, or set PYTHON" >&2; exit 2; }
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
            || { echo "keysync needs Python 3.10 or newer ($PYTHON is older)" >&2; exit 2; }
        "$PYTHON" -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        "$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
        # Build backends print warnings pip's --quiet lets through: kept in a log, shown on failure.
        if ! "$VENV/bin/python" -m pip install --quiet -e ".$extra" >"$VENV/pip-install.log" 2>&1; then
            cat "$VENV/pip-install.log" >&2
            echo "run.sh: installing keysync and its dependencies failed (the output is above)" >&2
            exit 3
        fi
        touch "$stamp"
    fi
}

if [ "${1:-}" = "test" ]; then
    shift
    ensure_venv "[dev]"
    export PATH="$PWD/$VENV/bin:$PATH"
    export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}  # no deadlines, fixed examples: stable on a busy CI machine
    # One command per line: under `set -e` a failure inside an && chain does not stop the script.
    echo "== ruff"
    ruff check keysync tests bench
    ruff format --check keysync tests bench
    echo "== mypy"
    mypy
    # Two worker processes (pytest-xdist): the suite's time is its ~1,000 keysync processes,
    # which leave a core idle when run one after another (10.8 -> 6.0 min on 2 cores).
    # `./run.sh test -n 0` runs it in one process.
    echo "== pytest" && exec pytest -n 2 "$@"
fi

ensure_venv ""
"$VENV/bin/keysync" -c keysync-config.yaml generate
"$VENV/bin/keysync" -c keysync-config.yaml run "$@"
