"""`lookalike models list` fits an 80-column terminal; --wide and --json keep every figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from live import run_cli

from lookalike.registry import Ref, Registry

# The figures build_default writes into a model's manifest (see embed/build.py).
FIGURES = {
    "task": "image-embedding",
    "default_variant": "int8",
    "embedding_dim": 1280,
    "latency_batch1": {
        "fp32": {"median_ms": 7.91, "p95_ms": 9.42},
        "int8": {"median_ms": 4.37, "p95_ms": 5.18},
    },
    "int8_fidelity": {"mean_cosine": 0.99312, "recall_at_10": 0.9514},
    "onnx_vs_torch_max_abs_diff": 3.1e-6,
}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home whose registry holds three versions of a long-named model, two with aliases."""
    reg = Registry(tmp_path / "models", "model")
    refs: list[Ref] = []
    for _ in range(3):
        with reg.create("effnet_lite0_garment_crop_hsv", dict(FIGURES)) as w:
            (w.path / "model.onnx").write_bytes(b"not read by the listing")
        refs.append(w.ref)
    reg.set_aliases(refs[0].name, production=refs[2].version, previous=refs[1].version)
    # Another kind's model: held to its own metric, timed by its latency check.
    checks = {
        "passed": True,
        "results": {
            "metric": {"figures": {"metric": "mape", "direction": "lower", "candidate": 0.14518}},
            "latency": {"figures": {"median_ms": 0.6, "p95_ms": 1.53}},
        },
    }
    with reg.create("rental_price", {"task": "price-suggestion", "checks": checks}) as w:
        (w.path / "model.json").write_text("{}")
    return tmp_path


def test_models_list_fits_80_columns(home: Path) -> None:
    # run_cli sets COLUMNS=200: the table must not grow with a wide terminal either.
    out = run_cli(home, "models", "list", check=True).stdout
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80, out
    assert "production" in out and "previous" in out
    assert "5.2" in out and "0.951" in out  # the served variant's p95 and int8's R@10
    price = next(line for line in lines if "rental_price:1" in line)
    assert "mape 0.145" in price and "1.5" in price, out  # its metric and its check's p95


def test_models_list_wide_and_json_keep_every_figure(home: Path) -> None:
    wide = run_cli(home, "models", "list", "--wide", check=True).stdout
    assert "7.9/9.4" in wide and "0.9931" in wide
    rows = json.loads(run_cli(home, "models", "list", "--json", check=True).stdout)
    assert [r["ref"] for r in rows][:3] == [f"effnet_lite0_garment_crop_hsv:{v}" for v in "123"]
    assert rows[2]["aliases"] == ["production"]
    assert rows[2]["latency_batch1"] == FIGURES["latency_batch1"]
    assert rows[0]["int8_fidelity"] == FIGURES["int8_fidelity"]
