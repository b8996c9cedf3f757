"""Small real ONNX embedders that are broken on purpose, registered like any other model.

Each graph takes the default model's input (``pixels``: n x 3 x 224 x 224) and runs in ONNX
Runtime; the manifest copies the default model's preprocessing, so only the graph differs:

- ``projection``: 14x14 average pooling, then a fixed random 768 -> ``dim`` projection and L2
  normalisation. A real embedder of raw pixels: it runs, it is finite, and it is bad.
- ``nan``: the same graph multiplied by NaN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lookalike.registry import Ref, Registry

__all__ = ["copy_model", "register_onnx_model"]


def _graph(kind: str, dim: int, seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((3 * 16 * 16, dim)).astype(np.float32)
    inits = [numpy_helper.from_array(weights, "proj")]
    nodes = [
        helper.make_node(
            "AveragePool", ["pixels"], ["pooled"], kernel_shape=[14, 14], strides=[14, 14]
        ),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "proj"], ["projected"]),
        helper.make_node("LpNormalization", ["projected"], ["unit"], axis=1, p=2),
    ]
    last = "unit"
    if kind == "nan":
        inits.append(numpy_helper.from_array(np.array(np.nan, dtype=np.float32), "nan"))
        nodes.append(helper.make_node("Mul", ["unit", "nan"], ["poisoned"]))
        last = "poisoned"
    elif kind != "projection":
        raise ValueError(f"unknown graph kind {kind!r}")
    nodes.append(helper.make_node("Identity", [last], ["embedding"]))
    graph = helper.make_graph(
        nodes,
        f"lookalike_test_{kind}",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 3, 224, 224])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", dim])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def register_onnx_model(
    registry: Registry,
    kind: str,
    *,
    name: str = "effnet_lite0",
    dim: int = 1280,
    manifest_dim: int | None = None,
    like: str = "effnet_lite0:1",
    seed: int = 0,
) -> Ref:
    """Write a ``kind`` graph with output width ``dim`` as a new version of ``name``.

    ``manifest_dim`` (default ``dim``) is the width the manifest promises; the rest of the
    manifest (preprocessing, input/output names) is copied from ``like``.
    """
    base = registry.manifest(like)
    manifest = {
        "arch": f"test-{kind}",
        "embedding_dim": manifest_dim or dim,
        "preprocess": base["preprocess"],
        "input_name": "pixels",
        "output_name": "embedding",
        "normalised": "l2",
        "variants": {"fp32": "model_fp32.onnx"},
        "default_variant": "fp32",
    }
    with registry.create(name, manifest) as w:
        onnx.save(_graph(kind, dim, seed), str(w.path / "model_fp32.onnx"))
    return w.ref


def copy_model(registry: Registry, source: str = "effnet_lite0:1", **changes: object) -> Ref:
    """Register a byte-for-byte copy of ``source`` as a new version (same files, new number);
    ``changes`` replace manifest fields (e.g. an index copy's ``embedder``). Works for any
    artifact: a model, or an index (``copy_model(indexes, "catalog:production")``)."""
    import shutil

    src = registry.resolve(source)
    manifest = {
        k: v
        for k, v in registry.manifest(src).items()
        if k not in {"files", "name", "version", "kind", "created_at", "checks"}
    } | changes
    with registry.create(src.name, manifest) as w:
        for rel in registry.manifest(src)["files"]:
            Path(w.path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(registry.path(src) / rel, w.path / rel)
    return w.ref
