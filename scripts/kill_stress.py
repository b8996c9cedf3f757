"""kill -9 stress: SIGKILL ``index build``, ``refresh``, ``models promote`` and ``index promote``
at random points, then check that nothing half-written is visible and that the next run works.

    python scripts/kill_stress.py [--trials 50] [--seed 1] [--actions index-build,refresh,...]
                                  [--work DIR] [--out artifacts/kill_stress.json]

Builds a demo home once (the default model from LOOKALIKE_TEST_MODELS or /tmp/lk-home/models,
the demo catalog imported and indexed with the real CLI, a second model version and a candidate
index to promote, and a changed catalog feed for ``refresh``). Each action is first run to the
end once to measure how long it takes; every trial then copies the home (large artifact files
as hard links: nothing writes them in place), starts the command as a real subprocess in its
own session, SIGKILLs the whole session at a uniformly random moment of a full run (the median
of the runs seen so far, as load changes it), and checks:

- the registry lists only complete versions, each matching its manifest's checksums, and no
  ``.tmp-*`` folder is ever listed as one; every alias file is sound and points at complete
  versions, and production still exists (the server would keep serving it);
- the catalog database passes ``PRAGMA integrity_check``;
- the same command, run again, exits 0; afterwards no temp folder of the killed run is left;
- for refresh, the killed run's report (when it got far enough to write one) now says
  ``killed``, lists its orphan index versions, and no report still says ``running``.

Prints a table per action and writes every trial to the JSON file. Bounded: one trial is one
killed command plus one full run (about 20-30 s on two cores). 127.0.0.1 only; no network.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo" / "catalog"
MODEL = "effnet_lite0"
INDEX = "catalog"
ACTIONS: dict[str, list[str]] = {
    "index-build": ["index", "build"],
    "refresh": ["refresh", "--catalog", "{feed}"],
    "models-promote": ["models", "promote", f"{MODEL}:2"],
    "index-promote": ["index", "promote", f"{INDEX}:2"],
}
COMMAND_TIMEOUT_S = 600
FINAL_STATUSES = ("promoted", "up_to_date", "stopped", "kept")


@dataclass
class Trial:
    action: str
    delay_s: float
    killed: bool  # False when the command ended before the kill came
    exit_after_kill: int | None
    problems_after_kill: list[str] = field(default_factory=list)
    leftovers_after_kill: int = 0
    orphans_after_kill: list[str] = field(default_factory=list)
    recovery_exit: int | None = None
    recovery_seconds: float = 0.0
    problems_after_recovery: list[str] = field(default_factory=list)
    killed_report: str | None = None  # refresh only: "marked", "none written", or a problem
    finished_in_s: float | None = None  # when the command ended before the kill came

    @property
    def ok(self) -> bool:
        return (
            not self.problems_after_kill
            and self.recovery_exit == 0
            and not self.problems_after_recovery
        )


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env["LOOKALIKE_HOME"] = str(home)
    return env


def _cli(home: Path, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "lookalike.cli", *args],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        cwd=REPO,
    )
    if check and done.returncode != 0:
        raise SystemExit(f"`lookalike {' '.join(args)}` failed:\n{done.stdout}\n{done.stderr}")
    return done


def _models_source() -> Path:
    for candidate in (os.environ.get("LOOKALIKE_TEST_MODELS"), "/tmp/lk-home/models"):
        if candidate and Path(candidate, MODEL, "aliases.json").is_file():
            return Path(candidate)
    raise SystemExit(
        "no built default model: set LOOKALIKE_TEST_MODELS to a models/ folder "
        "(`lookalike models build-default` makes one)"
    )


def add_model_version(home: Path) -> str:
    """Register a copy of the production model as a new version (a real promote target)."""
    from lookalike.registry import Ref, Registry

    models = Registry(home / "models", "model")
    source = models.resolve(Ref(MODEL, "production"))
    manifest = models.manifest(source)
    skip = {"files", "name", "version", "created_at", "kind", "checks", "forced_promotion"}
    with models.create(MODEL, {k: v for k, v in manifest.items() if k not in skip}) as writer:
        for rel in manifest["files"]:
            target = writer.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(models.path(source) / rel, target)
    return writer.ref.version


def make_feed(folder: Path, drop: int = 10, add: int = 12) -> Path:
    """A changed catalog: the demo minus ``drop`` items plus ``add`` new ones (mirrored demo
    photos, so the drift check passes). Images are copied in: paths stay inside the folder."""
    from PIL import Image, ImageOps

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    with open(DEMO / "items.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        shutil.copy(DEMO / row["image"], images / Path(row["image"]).name)
        row["image"] = f"images/{Path(row['image']).name}"
    kept = rows[drop:]
    for i, src in enumerate(rows[:add]):
        name = f"images/new-{i:03d}.jpg"
        with Image.open(folder / src["image"]) as photo:
            ImageOps.mirror(photo.convert("RGB")).save(folder / name, quality=92)
        kept.append({**src, "item_id": f"NEW-{i:03d}", "title": f"new {i}", "image": name})
    path = folder / "items.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return path


def prepare_base(home: Path, feed_dir: Path, *, promote_targets: bool = True) -> Path:
    """Turn a demo home (model, catalog, production index) into the stress base; return the
    feed. With ``promote_targets`` it also gets model version 2 and a candidate index 2."""
    from lookalike.registry import Registry

    feed = make_feed(feed_dir)
    if promote_targets:
        indexes = Registry(home / "index", "index")
        if "candidate" not in indexes.aliases(INDEX):
            _cli(home, ["index", "build", "--no-promote"])
            indexes.set_aliases(INDEX, candidate=indexes.versions(INDEX)[-1])
        add_model_version(home)
    return feed


def build_base(work: Path) -> tuple[Path, Path]:
    """A demo home built with the real CLI, plus promote targets and a feed."""
    home = work / "base"
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    shutil.copytree(_models_source(), home / "models")
    _cli(home, ["catalog", "import", str(DEMO / "items.csv")])
    _cli(home, ["index", "build"])
    return home, prepare_base(home, work / "feed")


def copy_home(base: Path, dest: Path) -> Path:
    """Copy a home. Large artifact files (weights, vectors, media) are hard-linked: nothing
    writes them in place. Small files (aliases, manifests, locks, the database) are copied,
    so a stray in-place write in one trial cannot reach the base or another trial."""
    linkable = ("models", "index", os.path.join("var", "media"))

    def copy(src: str, dst: str) -> None:
        rel = os.path.relpath(src, base)
        large = os.path.getsize(src) >= 256 * 1024
        if rel.startswith(linkable) and large and not src.endswith((".json", ".lock")):
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(base, dest, copy_function=copy)
    return dest


def check_home(home: Path) -> tuple[list[str], int]:
    """(problems, unfinished temp folders) of a home after a kill or a run."""
    from lookalike.registry import Ref, Registry

    problems: list[str] = []
    leftovers = 0
    for folder, kind in (("models", "model"), ("index", "index")):
        registry = Registry(home / folder, kind)
        for name in registry.names():
            versions = registry.versions(name)
            leftovers += len(registry.leftovers(name))
            for version in versions:
                if version.startswith("."):
                    problems.append(f"{kind} {name}: temp folder {version} listed as a version")
                    continue
                bad = registry.verify(Ref(name, version))
                if bad:
                    problems.append(f"{kind} {name}:{version} incomplete: {'; '.join(bad)}")
            problems += [f"{kind} {name}: {p}" for p in registry.alias_problems(name)]
            aliases = registry.aliases(name)
            if "production" not in aliases:
                problems.append(f"{kind} {name}: no production alias")
            for alias, version in aliases.items():
                if version not in versions:
                    problems.append(f"{kind} {name}: {alias} -> missing version {version}")
    db = home / "var" / "catalog.db"
    if db.is_file():
        with sqlite3.connect(db) as conn:
            verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if verdict != "ok":
            problems.append(f"catalog.db integrity_check: {verdict}")
    return problems, leftovers


def _unaliased_index_versions(home: Path, since: str) -> list[str]:
    from lookalike.registry import Registry

    return Registry(home / "index", "index").unaliased_since(INDEX, since)


def _refresh_reports(home: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((home / "var" / "refresh").glob("*.json")):
        try:
            out.append({"file": path.name, **json.loads(path.read_text("utf-8"))})
        except (OSError, ValueError):
            out.append({"file": path.name, "status": "unreadable"})
    return out


def _command(action: str, feed: Path) -> list[str]:
    return [part.format(feed=feed) for part in ACTIONS[action]]


def calibrate(base: Path, feed: Path, action: str, work: Path) -> float:
    """Seconds one unkilled run of ``action`` takes on a copy of the base (it must pass)."""
    home = copy_home(base, work / f"calibrate-{action}")
    start = time.monotonic()
    _cli(home, _command(action, feed))
    seconds = time.monotonic() - start
    shutil.rmtree(home, ignore_errors=True)
    return seconds


def run_trial(base: Path, feed: Path, action: str, delay: float, work: Path, n: int) -> Trial:
    home = copy_home(base, work / f"trial-{n:03d}-{action}")
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    reports_before = {r["file"] for r in _refresh_reports(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lookalike.cli", *_command(action, feed)],
        env=_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        start_new_session=True,  # its own process group: the kill reaches any child too
    )
    started = time.monotonic()
    try:
        proc.wait(timeout=delay)
        killed = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        killed = True
    trial = Trial(action, round(delay, 2), killed, proc.returncode)
    if not killed:
        trial.finished_in_s = round(time.monotonic() - started, 2)
    trial.problems_after_kill, trial.leftovers_after_kill = check_home(home)
    trial.orphans_after_kill = _unaliased_index_versions(home, since)
    killed_reports = [
        r for r in _refresh_reports(home) if r["file"] not in reports_before and r.get("pid")
    ]

    start = time.monotonic()
    again = _cli(home, _command(action, feed), check=False)
    trial.recovery_seconds = round(time.monotonic() - start, 1)
    trial.recovery_exit = again.returncode
    if again.returncode != 0:
        tail = (again.stdout + again.stderr).strip().splitlines()[-3:]
        trial.problems_after_recovery.append("recovery run failed: " + " | ".join(tail))
    problems, leftovers = check_home(home)
    trial.problems_after_recovery += problems
    if leftovers and action in ("index-build", "refresh"):
        trial.problems_after_recovery.append(f"{leftovers} temp folder(s) left after the rerun")

    if action == "refresh":
        trial.killed_report = _check_killed_report(home, proc.pid, killed, killed_reports, trial)
    if trial.ok:
        shutil.rmtree(home, ignore_errors=True)
    return trial


def _check_killed_report(
    home: Path, pid: int, killed: bool, written: list[dict[str, Any]], trial: Trial
) -> str:
    reports = _refresh_reports(home)
    still_running = [r["file"] for r in reports if r.get("status") == "running"]
    if still_running:
        trial.problems_after_recovery.append(f"reports still say running: {still_running}")
    if not killed:
        return "not killed"
    mine = [r for r in reports if r.get("pid") == pid]
    if not written or not mine:
        return "none written (killed before the run started)"
    report = mine[0]
    if report.get("status") in FINAL_STATUSES:
        return "finished (killed while exiting, after its final report)"
    if report.get("status") != "killed":
        trial.problems_after_recovery.append(
            f"the killed run's report says {report.get('status')!r}, not 'killed'"
        )
        return "not marked"
    newest = reports[-1]
    listed = [k.get("report") for k in newest.get("killed_runs", [])]
    if report["file"] not in listed:
        trial.problems_after_recovery.append("the next run's report does not list the killed run")
    listed_orphans = report.get("orphans", [])
    missing = [v for v in trial.orphans_after_kill if f"{INDEX}:{v}" not in listed_orphans]
    if missing:
        trial.problems_after_recovery.append(f"orphans not listed in the killed report: {missing}")
    return "marked"


def summarise(trials: list[Trial]) -> list[dict[str, Any]]:
    rows = []
    for action in sorted({t.action for t in trials}):
        mine = [t for t in trials if t.action == action]
        rows.append(
            {
                "action": action,
                "trials": len(mine),
                "killed": sum(t.killed for t in mine),
                "bad_after_kill": sum(bool(t.problems_after_kill) for t in mine),
                "leftovers_seen": sum(t.leftovers_after_kill > 0 for t in mine),
                "orphans_seen": sum(bool(t.orphans_after_kill) for t in mine),
                "recovered": sum(t.recovery_exit == 0 for t in mine),
                "reports_marked": sum(t.killed_report == "marked" for t in mine),
                "ok": sum(t.ok for t in mine),
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = list(rows[0]) if rows else []
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))


def run(
    base: Path,
    feed: Path,
    work: Path,
    actions: list[str],
    trials: int,
    seed: int,
    durations: dict[str, float] | None = None,
) -> tuple[list[Trial], dict[str, float]]:
    """Calibrate each action (unless ``durations`` are given), then run ``trials`` trials
    spread over ``actions`` in turn, each killed at a uniformly random moment of its duration.

    The machine's load changes what a run takes, so the duration kills are drawn from is the
    median of every full run seen so far: the calibration, each trial's rerun, and each trial
    that ended before its kill."""
    rng = random.Random(seed)
    seen: dict[str, list[float]] = {a: [d] for a, d in (durations or {}).items()}
    for action in actions:
        if action not in seen:
            seen[action] = [calibrate(base, feed, action, work)]
    done: list[Trial] = []
    for n in range(trials):
        action = actions[n % len(actions)]
        delay = rng.uniform(0.2, max(0.5, statistics.median(seen[action])))
        trial = run_trial(base, feed, action, delay, work, n)
        seen[action].append(trial.recovery_seconds)
        if trial.finished_in_s is not None:
            seen[action].append(trial.finished_in_s)
        done.append(trial)
        mark = (
            "ok"
            if trial.ok
            else "FAIL " + "; ".join(trial.problems_after_kill + trial.problems_after_recovery)
        )
        print(f"[{n + 1}/{trials}] {action} killed at {delay:.1f}s: {mark}", flush=True)
    return done, {a: round(statistics.median(v), 1) for a, v in seen.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--actions", default=",".join(ACTIONS))
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--out", type=Path, default=REPO / "artifacts" / "kill_stress.json")
    args = parser.parse_args()
    actions = [a for a in args.actions.split(",") if a]
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown:
        parser.error(f"unknown actions {unknown}; choose from {', '.join(ACTIONS)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="lk-kill-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"building the base home in {work} ...", flush=True)
    base, feed = build_base(work)
    trials, durations = run(base, feed, work, actions, args.trials, args.seed)
    rows = summarise(trials)
    print()
    print_table(rows)
    failed = [t for t in trials if not t.ok]
    doc = {
        "trials": len(trials),
        "failed": len(failed),
        "seed": args.seed,
        "median_run_seconds": durations,
        "summary": rows,
        "runs": [asdict(t) | {"ok": t.ok} for t in trials],
        "wall_seconds": round(time.monotonic() - started, 1),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    print(f"\n{len(trials) - len(failed)}/{len(trials)} trials ok; wrote {args.out}")
    if failed:
        print(f"failed trial homes are kept under {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
