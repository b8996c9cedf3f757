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
