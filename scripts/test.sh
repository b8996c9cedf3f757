#!/usr/bin/env bash
# The whole test suite: lint, layer contract, unit, integration (SQLite and a real PostgreSQL
# on 127.0.0.1) and e2e (real Chromium). Run by `make test` and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
. .venv/bin/activate

pg_dir=""
# The server this run started is stopped (and its folder removed) however the run ends:
# success, failure, Ctrl-C or kill. A server given by LOOKALIKE_TEST_POSTGRES_URL is left alone.
cleanup() {
  if [ -n "$pg_dir" ]; then
    bash scripts/start_postgres.sh stop "$pg_dir" >/dev/null 2>&1 || true
    pg_dir=""
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if [ -z "${LOOKALIKE_TEST_POSTGRES_URL:-}" ]; then
  pg_env=$(bash scripts/start_postgres.sh)
  eval "$pg_env"
  pg_dir="${LOOKALIKE_TEST_POSTGRES_DIR:?start_postgres.sh printed no LOOKALIKE_TEST_POSTGRES_DIR}"
fi

ruff check src tests scripts benchmarks
lint-imports
python -m pytest -q -p no:cacheprovider "$@"
