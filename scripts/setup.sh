#!/usr/bin/env bash
# Create .venv and install the project. `--test` also installs what the test suite needs
# (Chromium, PostgreSQL, Xvfb from Debian; the test extra from PyPI). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# The stamp lists the extras installed (comma-separated). It is satisfied when those are a
# superset of the wanted ones, so `make demo` after `make test` (or the reverse) installs
# nothing; a new pyproject.toml reinstalls the union, so no extra is ever dropped.
stamp=.venv/.lookalike-installed
extras="build,postgres,report"
# the test suite also runs a short locust benchmark (the bench extra)
[ $want_test = 1 ] && extras="$extras,test,bench"
have=""
[ -f "$stamp" ] && have=$(head -n 1 "$stamp")
missing=""
for e in ${extras//,/ }; do
  case ",$have," in *",$e,"*) ;; *) missing="$missing $e" ;; esac
done
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ -n "$missing" ]; then
  union=$(printf '%s\n' ${have//,/ } ${extras//,/ } | sort -u | paste -sd, -)
  if [ -z "$have" ]; then
    echo "setup: installing lookalike[$union] into .venv from PyPI: about 2 minutes on a fast"
    echo "setup: link, about 6 GB. Most of it is the build extra: torch (to build the default"
    echo "setup: model), whose PyPI wheel pulls CUDA libraries (nvidia-*, triton: ~4 GB) even on"
    echo "setup: a CPU machine. Serving needs only onnxruntime, faiss, numpy and Pillow."
  else
    echo "setup: updating .venv to lookalike[$union] (had: $have)"
  fi
  started=$SECONDS
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$union]"
  echo "$union" > "$stamp"
  echo "setup: installed in $((SECONDS - started)) s ($(du -sh .venv 2>/dev/null | cut -f1) in .venv)"
fi

if [ $want_test = 1 ]; then
  need=()
  [ -x /usr/bin/chromium ] || need+=(chromium)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  command -v Xvfb >/dev/null 2>&1 || need+=(xvfb)
  command -v xdotool >/dev/null 2>&1 || need+=(xdotool)
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing from Debian: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi
