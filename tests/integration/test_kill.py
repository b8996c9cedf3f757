"""kill -9 of real ``lookalike index build`` and ``lookalike refresh`` processes.

A few trials of ``scripts/kill_stress.py`` (the 50-trial run is the script itself): each starts
the real CLI on a copy of the demo home, SIGKILLs it at a random moment, checks that no
half-written version is visible, that aliases are sound, that the catalog database is intact,
and that the next run succeeds. A deterministic refresh kill checks the "killed" report.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from lookalike.registry import Ref, Registry

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stress() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "kill_stress", REPO / "scripts" / "kill_stress.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kill_stress"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def base(stress: ModuleType, demo_home: Path, tmp_path: Path) -> tuple[Path, Path]:
    home = stress.copy_home(demo_home, tmp_path / "base")
    feed = stress.prepare_base(home, tmp_path / "feed", promote_targets=False)
    return home, feed


def test_random_kills_of_index_build_and_refresh(
    stress: ModuleType, base: tuple[Path, Path], tmp_path: Path
) -> None:
    home, feed = base
    trials, durations = stress.run(
        home, feed, tmp_path / "work", ["index-build", "refresh"], trials=6, seed=3
    )
    print(stress.summarise(trials), durations)
    failures = {
        f"{t.action}@{t.delay_s}s": t.problems_after_kill + t.problems_after_recovery
        for t in trials
        if not t.ok
    }
    assert failures == {}
    assert sum(t.killed for t in trials) >= 4  # delays are drawn within a measured run
    # What the kill left is never listed as a version, and each rerun cleaned it up.
    assert all(t.recovery_exit == 0 for t in trials)


def test_killed_refresh_leaves_a_report_that_the_next_run_marks(
    stress: ModuleType, base: tuple[Path, Path]
) -> None:
    home, feed = base
    command = [sys.executable, "-m", "lookalike.cli", "refresh", "--catalog", str(feed)]
    proc = subprocess.Popen(
        command,
        env=stress._env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the running report is written before the import starts
            if line.startswith("embedding "):
                break
        else:
            pytest.fail(f"the refresh ended before embedding (exit {proc.wait()})")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    reports = sorted((home / "var" / "refresh").glob("*.json"))
    [running] = [p for p in reports if json.loads(p.read_text())["pid"] == proc.pid]
    assert json.loads(running.read_text())["status"] == "running"
    assert running.with_suffix(".txt").read_text().startswith("refresh ")

    again = subprocess.run(command, env=stress._env(home), capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    killed = json.loads(running.read_text())
    assert killed["status"] == "killed" and "killed before it finished" in killed["summary"]
    newest = json.loads(sorted((home / "var" / "refresh").glob("*.json"))[-1].read_text())
    assert newest["status"] in ("promoted", "up_to_date")
    assert [k["report"] for k in newest["killed_runs"]] == [running.name]
    # Any index version the killed run wrote and never aliased is named in its report.
    indexes = Registry(home / "index", "index")
    aliased = set(indexes.aliases("catalog").values())
    written = indexes.unaliased_since("catalog", killed["started_at"])
    assert all(f"catalog:{v}" in killed["orphans"] for v in written if v not in aliased)
    assert indexes.leftovers("catalog") == []
    assert indexes.verify(indexes.resolve(Ref("catalog", "production"))) == []
