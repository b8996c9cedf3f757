#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for tests, listening only on 127.0.0.1.
#
#   eval "$(scripts/start_postgres.sh)"          # start; exports LOOKALIKE_TEST_POSTGRES_URL
#   scripts/start_postgres.sh stop DIR           # stop the server whose files live in DIR
#
# Installs PostgreSQL with apt-get when initdb is missing (needs root). The cluster lives in a
# temp folder (or $1 / $LOOKALIKE_PG_DIR; when run as root the postgres user must be able to
# reach it, so not under a 0700 folder), trusts loopback connections (test data only), keeps
# its unix socket in that folder, and runs with fsync off: it is for tests, never for data.
# stdout carries only shell lines to eval; progress goes to stderr.
set -euo pipefail

log() { echo "start_postgres: $*" >&2; }

find_bin() {
    local found
    found=$(command -v initdb 2>/dev/null || true)
    if [[ -z "$found" ]]; then
        found=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
    fi
    [[ -n "$found" ]] && dirname "$(readlink -f "$found")"
}

# initdb and postgres refuse to run as root: run them as the postgres user in that case.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

if [[ "${1:-}" == "stop" ]]; then
    dir=${2:?usage: start_postgres.sh stop DIR}
    bin=$(find_bin) || { log "initdb not found"; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2
    rm -rf "$dir"
    exit 0
fi

bin=$(find_bin || true)
if [[ -z "$bin" ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        log "initdb not found and not root: install postgresql (apt-get install postgresql)"
        exit 1
    fi
    log "installing postgresql with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q postgresql >&2 || { apt-get update -q >&2 && apt-get install -y -q postgresql >&2; }
    bin=$(find_bin) || { log "initdb still missing after install"; exit 1; }
fi

dir=${1:-${LOOKALIKE_PG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/lookalike-pg.XXXXXX")}}
mkdir -p "$dir"
if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$dir" --shell /bin/false postgres
    chown postgres "$dir"
    chmod 700 "$dir"
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --no-sync \
    --no-instructions >&2
as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >&2 || { cat "$dir/server.log" >&2; exit 1; }
as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres lookalike >&2

log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, files in $dir"
echo "export LOOKALIKE_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$port/lookalike"
echo "export LOOKALIKE_TEST_POSTGRES_DIR=$dir"
echo "# stop it with: $0 stop $dir"
prefix=""
[[ $(id -u) -eq 0 ]] && prefix="runuser -u postgres -- "
echo "#   (or: $prefix$bin/pg_ctl -D $dir/data stop)"
