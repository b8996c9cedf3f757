"""The registry: atomic versions, checksums, aliases, promote and rollback on a real folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lookalike.core.errors import InvalidInput, NotFound
from lookalike.registry import Ref, Registry


def _write(reg: Registry, text: str, **manifest) -> Ref:
    with reg.create("toy", manifest) as w:
        (w.path / "weights.bin").write_text(text)
        (w.path / "sub").mkdir()
        (w.path / "sub" / "cfg.json").write_text("{}")
    return w.ref


def test_versions_are_numbered_and_manifest_has_checksums(tmp_path: Path) -> None:
    reg = Registry(tmp_path, "model")
    a = _write(reg, "one", figure=1)
    b = _write(reg, "two")
    assert (a.version, b.version) == ("1", "2")
    m = reg.manifest(a)
    assert m["figure"] == 1 and m["name"] == "toy" and m["version"] == "1"
    assert set(m["files"]) == {"weights.bin", "sub/cfg.json"}
    assert len(m["files"]["weights.bin"]["sha256"]) == 64
    assert reg.verify(a) == [] and reg.verify(b) == []
    assert reg.resolve("toy:latest") == b


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    reg = Registry(tmp_path, "model")
    with pytest.raises(RuntimeError), reg.create("toy") as w:
        (w.path / "weights.bin").write_text("half")
        raise RuntimeError("crash mid-write")
    assert reg.versions("toy") == []
    assert [p.name for p in (tmp_path / "toy").iterdir()] == []


def test_verify_reports_corruption_and_missing_files(tmp_path: Path) -> None:
    reg = Registry(tmp_path, "model")
    ref = _write(reg, "good")
    (reg.path(ref) / "weights.bin").write_text("evil")
    (reg.path(ref) / "sub" / "cfg.json").unlink()
    problems = reg.verify(ref)
    assert any("weights.bin: checksum" in p for p in problems)
    assert any("sub/cfg.json: missing" in p for p in problems)


def test_promote_and_rollback_move_aliases_atomically(tmp_path: Path) -> None:
    reg = Registry(tmp_path, "model")
    a, b = _write(reg, "a"), _write(reg, "b")
    reg.promote(a)
    assert reg.resolve("toy:production") == a
    reg.promote(b)
    assert reg.aliases("toy") == {"production": "2", "previous": "1"}
    reg.rollback("toy")
    assert reg.aliases("toy") == {"production": "1", "previous": "2"}
    # nothing was deleted by either
    assert reg.versions("toy") == ["1", "2"]
    on_disk = json.loads((tmp_path / "toy" / "aliases.json").read_text())
    assert on_disk["production"] == "1"
    assert not list((tmp_path / "toy").glob(".*tmp*"))


def test_errors_name_the_fix(tmp_path: Path) -> None:
    reg = Registry(tmp_path, "model")
    with pytest.raises(NotFound, match="lookalike models build-default"):
        reg.resolve("effnet_lite0:production")
    with pytest.raises(NotFound, match="lookalike index build"):
        Registry(tmp_path, "index").resolve("catalog:production")
    priced = Registry(tmp_path, "model", fix="lookalike price build")  # a product's own command
    with pytest.raises(NotFound, match="run `lookalike price build`$"):
        priced.resolve("rental_price:production")
    with pytest.raises(NotFound, match="no previous"):
        _write(reg, "x")
        reg.promote("toy:1")
        reg.rollback("toy")
    with pytest.raises(NotFound):
        reg.promote("toy:9")
    with pytest.raises(InvalidInput):
        reg.update_manifest(Ref("toy", "1"), files={})
    with pytest.raises(InvalidInput):
        reg.create("../escape").__enter__()


def test_update_manifest_adds_figures_and_keeps_checksums(tmp_path: Path) -> None:
    reg = Registry(tmp_path, "model")
    ref = _write(reg, "a")
    reg.update_manifest(ref, evaluation={"recall@10": 0.5})
    assert reg.manifest(ref)["evaluation"] == {"recall@10": 0.5}
    assert reg.verify(ref) == []


def test_ref_parse() -> None:
    assert Ref.parse("m:3") == Ref("m", "3")
    assert Ref.parse("m") == Ref("m", "production")
    assert str(Ref("m", "3")) == "m:3"


# -- concurrency: the alias file is locked around every read-modify-write ----------------------


def _promoter(root: str, version: str, start, done, rounds: int) -> None:
    reg = Registry(Path(root), "model")
    for _ in range(rounds):
        start.wait()
        reg.promote(Ref("toy", version))
        done.wait()


def test_two_promotes_at_once_never_lose_an_update(tmp_path: Path) -> None:
    import multiprocessing

    reg = Registry(tmp_path, "model")
    for text in ("a", "b", "c"):
        _write(reg, text)
    rounds = 100
    ctx = multiprocessing.get_context("fork")
    start, done = ctx.Barrier(3, timeout=60), ctx.Barrier(3, timeout=60)
    workers = [
        ctx.Process(target=_promoter, args=(str(tmp_path), v, start, done, rounds))
        for v in ("2", "3")
    ]
    for w in workers:
        w.start()
    outcomes: dict[str, int] = {}
    try:
        for _ in range(rounds):
            reg.set_aliases("toy", production="1", previous=None)
            start.wait()  # both workers promote as soon as this opens
            done.wait()
            final = reg.aliases("toy")
            # Serial orders give production 3 after 2 (previous 2) or 2 after 3 (previous 3);
            # a lost update leaves previous at 1.
            key = f"{final['production']}<-{final['previous']}"
            outcomes[key] = outcomes.get(key, 0) + 1
    finally:
        for w in workers:
            w.join(timeout=60)
            if w.is_alive():
                w.kill()
    assert set(outcomes) <= {"3<-2", "2<-3"}, outcomes
    assert sum(outcomes.values()) == rounds
    assert all(w.exitcode == 0 for w in workers)


def test_alias_lock_is_reentrant_and_holds_off_other_processes(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    reg = Registry(tmp_path, "model")
    a, b = _write(reg, "a"), _write(reg, "b")
    code = (
        "import sys, time; from pathlib import Path; from lookalike.registry import Registry\n"
        "t = time.monotonic(); Registry(Path(sys.argv[1]), 'model').promote('toy:1')\n"
        "print(round(time.monotonic() - t, 2))"
    )
    with reg.alias_lock("toy"):
        reg.promote(b)  # nested: the same process does not deadlock on its own lock
        other = subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        time.sleep(1.5)
        assert other.poll() is None  # still waiting for the lock
        assert reg.aliases("toy") == {"production": "2"}
    waited = float(other.communicate(timeout=60)[0])
    assert waited >= 1.0
    assert reg.aliases("toy") == {"production": a.version, "previous": b.version}


def test_alias_lock_gives_up_naming_the_holder(tmp_path: Path) -> None:
    import fcntl
    import os

    from lookalike.core.errors import Unavailable

    reg = Registry(tmp_path, "model")
    _write(reg, "a")
    fd = os.open(tmp_path / "toy" / "aliases.lock", os.O_RDWR | os.O_CREAT)
    try:
        # Another open file description: the same as another process holding it.
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.pwrite(fd, b"4242", 0)
        with pytest.raises(Unavailable, match="locked by pid 4242"), reg.alias_lock("toy", 0.2):
            pass
    finally:
        os.close(fd)
    assert reg.promote("toy:1") == {"production": "1"}


# -- a damaged aliases.json never raises; it is reported and can be repaired -------------------

MALFORMED = {
    "a list": b'["production", "1"]',
    "null": b"null",
    "a number": b"7",
    "random bytes": bytes(range(256)) * 4,
    "truncated JSON": b'{"production": "2", "prev',
    "empty file": b"",
    "non-string values": b'{"production": 2, "previous": ["1"], "candidate": {"v": 1}}',
    "unknown versions": b'{"production": "9", "previous": "../../etc"}',
    "unknown alias": b'{"staging": "1", "production": "7"}',
}


@pytest.mark.parametrize("form", sorted(MALFORMED))
def test_malformed_aliases_never_crash(tmp_path: Path, form: str) -> None:
    from lookalike.registry.store import BrokenAliases

    reg = Registry(tmp_path, "model")
    a, b = _write(reg, "a"), _write(reg, "b")
    (tmp_path / "toy" / "aliases.json").write_bytes(MALFORMED[form])

    assert reg.aliases("toy") == {}
    problems = reg.alias_problems("toy")
    assert problems and all(isinstance(p, str) and len(p) < 300 for p in problems)
    with pytest.raises(BrokenAliases) as caught:
        reg.aliases_strict("toy")
    assert caught.value.problems == problems and "lookalike registry repair" in caught.value.message
    with pytest.raises(NotFound, match="damaged.*lookalike registry repair"):
        reg.resolve("toy:production")
    assert reg.resolve("toy:latest") == b  # what does not need an alias still works
    with pytest.raises(NotFound, match="no previous"):
        reg.rollback("toy")

    # promote writes a sound file again, from what was valid (nothing here)
    assert reg.promote(a) == {"production": "1"}
    assert reg.alias_problems("toy") == []
    assert json.loads((tmp_path / "toy" / "aliases.json").read_text()) == {"production": "1"}


def test_valid_entries_survive_beside_broken_ones(tmp_path: Path) -> None:
    reg = Registry(tmp_path, "model")
    _write(reg, "a"), _write(reg, "b")
    path = tmp_path / "toy" / "aliases.json"
    path.write_text('{"production": "2", "previous": "5", "candidate": 1}')
    assert reg.aliases("toy") == {"production": "2"}
    assert reg.resolve("toy:production") == Ref("toy", "2")
    problems = reg.alias_problems("toy")
    assert sorted(p.split(" ")[1] for p in problems) == ["'candidate'", "'previous'"]
    path.write_text('{"production": "2", "previous": null}')  # null is an absent alias
    assert reg.aliases("toy") == {"production": "2"} and reg.alias_problems("toy") == []


def test_repair_keeps_what_is_valid(tmp_path: Path) -> None:
    reg = Registry(tmp_path, "model")
    for text in ("a", "b", "c"):
        _write(reg, text)
    (tmp_path / "toy" / "aliases.json").write_text(
        '{"production": "3", "previous": 2, "candidate": "8"}'
    )
    done = reg.repair_aliases("toy")
    assert done["changed"] is True and done["after"] == {"production": "3"}
    assert len(done["problems"]) == 2 and done["actions"]
    assert reg.alias_problems("toy") == [] and reg.aliases("toy") == {"production": "3"}
    again = reg.repair_aliases("toy")
    assert again["changed"] is False and again["actions"] == []


def test_repair_picks_newest_version_that_passed_checks(tmp_path: Path) -> None:
    reg = Registry(tmp_path, "model")
    for text in ("a", "b", "c", "d"):
        _write(reg, text)
    reg.update_manifest(Ref("toy", "2"), checks={"passed": True})
    reg.update_manifest(Ref("toy", "3"), checks={"passed": True})
    reg.update_manifest(Ref("toy", "4"), checks={"passed": False})
    (reg.path(Ref("toy", "3")) / "weights.bin").write_text("corrupt")  # passed, now damaged
    (tmp_path / "toy" / "aliases.json").write_bytes(b"\x00\xff garbage")
    done = reg.repair_aliases("toy")
    assert done["after"] == {"production": "2"}
    assert "passed its checks" in done["actions"][-1]
    assert reg.resolve("toy:production") == Ref("toy", "2")


def test_repair_without_checks_on_record_takes_newest_intact(tmp_path: Path) -> None:
    reg = Registry(tmp_path, "model")
    _write(reg, "a"), _write(reg, "b")
    (tmp_path / "toy" / "aliases.json").write_text("[]")
    done = reg.repair_aliases("toy")
    assert done["after"] == {"production": "2"} and "newest intact" in done["actions"][-1]


def test_repair_of_a_sound_file_changes_nothing(tmp_path: Path) -> None:
    reg = Registry(tmp_path, "model")
    a, b = _write(reg, "a"), _write(reg, "b")
    reg.promote(a)
    reg.promote(b)
    before = (tmp_path / "toy" / "aliases.json").read_bytes()
    done = reg.repair_aliases("toy")
    assert done["changed"] is False and done["after"] == {"production": "2", "previous": "1"}
    assert (tmp_path / "toy" / "aliases.json").read_bytes() == before


# -- a writer killed before its rename leaves no visible version -------------------------------


def test_killed_writer_leftover_is_never_a_version_and_is_cleaned(tmp_path: Path) -> None:
    import subprocess
    import sys

    reg = Registry(tmp_path, "model")
    good = _write(reg, "a")
    # A real process writes a version up to its manifest, then dies before the rename.
    code = (
        "import os, sys; from pathlib import Path; from lookalike.registry import Registry\n"
        "import lookalike.registry.store as s\n"
        "reg = Registry(Path(sys.argv[1]), 'model')\n"
        "s.os.rename = lambda *a: os._exit(9)\n"
        "with reg.create('toy') as w:\n"
        "    (w.path / 'weights.bin').write_text('half')\n"
    )
    dead = subprocess.run([sys.executable, "-c", code, str(tmp_path)], timeout=60)
    assert dead.returncode == 9
    [left] = reg.leftovers("toy")
    assert (left / "manifest.json").is_file()  # it got as far as the manifest
    assert reg.versions("toy") == [good.version] and reg.resolve("toy:latest") == good
    assert reg.clean_leftovers("toy") == [left.name] and reg.leftovers("toy") == []


def test_live_writer_leftover_is_kept(tmp_path: Path) -> None:
    reg = Registry(tmp_path, "model")
    with reg.create("toy") as w:
        (w.path / "weights.bin").write_text("in progress")
        assert reg.clean_leftovers("toy") == []  # our own pid is alive
        assert reg.leftovers("toy") == [w.path]
    assert reg.leftovers("toy") == [] and reg.versions("toy") == ["1"]


def test_registry_cli_show_and_repair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from lookalike.cli.registry import app

    monkeypatch.setenv("LOOKALIKE_HOME", str(tmp_path))
    models = Registry(tmp_path / "models", "model")
    with models.create("toy") as w:
        (w.path / "weights.bin").write_text("a")
    (tmp_path / "models" / "toy" / "aliases.json").write_text("null")
    runner = CliRunner()
    shown = runner.invoke(app, ["show", "toy"])
    assert shown.exit_code == 0, shown.output
    assert "holds NoneType" in shown.output and "lookalike registry repair toy" in shown.output
    assert runner.invoke(app, ["show", "nope"]).exit_code == 1
    assert runner.invoke(app, ["repair", "nope", "--kind", "models"]).exit_code == 1
    repaired = runner.invoke(app, ["repair", "--kind", "models"])
    assert repaired.exit_code == 0, repaired.output
    assert "repaired" in repaired.output and "production=1" in repaired.output
    assert models.aliases("toy") == {"production": "1"} and models.alias_problems("toy") == []
    again = runner.invoke(app, ["repair", "toy"])
    assert again.exit_code == 0 and "sound" in again.output
