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
  # Figures measured on the 2-core dev machine with wheels on local disk (a fresh venv under
  # /tmp, lookalike[build,postgres,report]): pip 4 s, the install 90 s, 5.9 GB in the venv, of
  # which nvidia-* 3.2 GB, torch 1.2 GB, triton 0.9 GB. torchvision 0.29.1 pins torch 2.14.1,
  # whose only wheel there is the CUDA build, so a CPU-only torch is not an option here yet.
  if [ -z "$have" ]; then
    echo "setup: installing lookalike[$union] into .venv; pip prints nothing while it works."
    echo "setup: about 2 minutes with wheels on local disk (longer from PyPI), about 6 GB."
    echo "setup: Most of it is the build extra: torch (to build the default model), whose"
    echo "setup: wheel pulls CUDA libraries (nvidia-*, triton: about 4 GB) even on a CPU machine."
    echo "setup: Serving needs only onnxruntime, faiss, numpy and Pillow; it never imports torch."
  else
    echo "setup: updating .venv to lookalike[$union] (had: $have); pip prints nothing meanwhile"
  fi
  started=$SECONDS
  echo "setup: [1/2] upgrading pip (a few seconds)"
  .venv/bin/python -m pip install -q --upgrade pip
  echo "setup: [2/2] pip install -e '.[$union]' (the long step; see the figures above)"
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
    echo "setup: installing from Debian: ${need[*]} (apt-get prints nothing until it ends)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi
