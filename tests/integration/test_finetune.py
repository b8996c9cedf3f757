"""The backbone cut in two for fine-tuning: stem + tail is the whole model; only the tail learns.

Real torch EfficientNet-Lite0 with the built default model's ImageNet weights, real onnxruntime
for the exported stem, real photos from the demo catalog.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lookalike.core.errors import InvalidInput
from lookalike.embed.preprocess import PreprocessConfig, preprocess_batch
from lookalike.embed.torch_model import load_torch_embedder
from lookalike.registry import Registry
from lookalike.training.finetune import FinetuneConfig, Tail, finetune, stem_runner


@pytest.fixture()
def model(built_models: Path):  # type: ignore[no-untyped-def]
    registry = Registry(built_models, "model")
    ref = registry.resolve("effnet_lite0:production")
    return load_torch_embedder(registry.path(ref) / "weights.pt")


@pytest.fixture(scope="module")
def photos(demo_images: list[Path]) -> list[Image.Image]:
    out = []
    for p in demo_images[:12]:
        with Image.open(p) as img:
            out.append(img.convert("RGB"))
    return out


@pytest.mark.parametrize("at", [13, 15])
def test_stem_then_tail_is_the_whole_model(model, photos, at: int, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with torch.inference_mode():
        whole = model(torch.from_numpy(preprocess_batch(photos, PreprocessConfig()))).numpy()
    rows = stem_runner(model, at)(photos)
    tail = Tail(model, at)
    assert rows.shape == (len(photos), int(np.prod(tail.in_shape)))
    np.testing.assert_allclose(tail.features(rows), whole, atol=1e-5)
    # The ONNX stem (what fills the cache) agrees with torch.
    onnx_rows = stem_runner(model, at, onnx_dir=tmp_path)(photos)
    np.testing.assert_allclose(onnx_rows, rows, atol=1e-3)


def test_only_the_tail_learns_and_the_head_exports(model, photos) -> None:  # type: ignore[no-untyped-def]
    run = stem_runner(model, 15)
    catalog = run(photos)
    mirrored = run([p.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for p in photos])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = FinetuneConfig(at=15, epochs=2, batch_size=8, dim=32, colour_weight=0.0)
    result = finetune(model, [mirrored], catalog, cfg)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing learned"
    # Blocks 0..14 and the stem are frozen; running statistics never move (eval-mode BN).
    assert all(k.startswith(("_blocks.15.", "_conv_head", "_bn1.")) for k in changed), changed
    assert not any(k.endswith(("running_mean", "running_var")) for k in changed)
    assert len(result.history) == 2 and result.head.out_dim == 32
    assert result.head.extra["finetuned_from_block"] == 15
    with pytest.raises(InvalidInput):
        finetune(model, [mirrored[:5]], catalog, cfg)
    with pytest.raises(InvalidInput):
        stem_runner(model, 16)
