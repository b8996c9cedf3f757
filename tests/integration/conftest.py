"""Integration fixtures: a real PostgreSQL server for the tests that need one."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
START_POSTGRES = REPO / "scripts" / "start_postgres.sh"


def _initdb() -> str | None:
    found = shutil.which("initdb")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return candidates[-1] if candidates else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a PostgreSQL database the tests may fill and empty.

    Uses ``LOOKALIKE_TEST_POSTGRES_URL`` when set (CI starts the server with
    ``scripts/start_postgres.sh``); otherwise starts a throwaway server on 127.0.0.1 for this
    session and stops it at the end; skips when PostgreSQL is not installed.
    """
    url = os.environ.get("LOOKALIKE_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    if _initdb() is None:
        pytest.skip(
            'PostgreSQL is not installed (no initdb): run `eval "$(scripts/start_postgres.sh)"` '
            "or set LOOKALIKE_TEST_POSTGRES_URL"
        )
    # Not under pytest's tmp dir: that is 0700 for root, and the server runs as user postgres.
    workdir = tempfile.mkdtemp(prefix="lookalike-pg-")
    result = subprocess.run(
        [str(START_POSTGRES), workdir], capture_output=True, text=True, timeout=120, check=False
    )
    match = re.search(r"^export LOOKALIKE_TEST_POSTGRES_URL=(\S+)$", result.stdout, re.M)
    if result.returncode != 0 or match is None:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL:\n{result.stdout}\n{result.stderr}")
    try:
        yield match.group(1)
    finally:
        subprocess.run(
            [str(START_POSTGRES), "stop", workdir], capture_output=True, timeout=60, check=False
        )
        shutil.rmtree(workdir, ignore_errors=True)
