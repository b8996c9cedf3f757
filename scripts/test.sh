#!/usr/bin/env bash
# The whole test suite: lint, layer contract, unit, integration (SQLite and a real PostgreSQL
# on 127.0.0.1) and e2e (real Chromium). Run by `make test` and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
. .venv/bin/activate

pg_stop=""
if [ -z "${LOOKALIKE_TEST_POSTGRES_URL:-}" ]; then
  pg_env=$(bash scripts/start_postgres.sh)
  eval "$pg_env"
  pg_stop="${PG_STOP_CMD:-}"
fi
cleanup() { [ -n "$pg_stop" ] && eval "$pg_stop" >/dev/null 2>&1 || true; }
trap cleanup EXIT

ruff check src tests scripts benchmarks
lint-imports
python -m pytest -q -p no:cacheprovider "$@"
