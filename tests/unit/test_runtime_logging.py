"""How the runtime ladder logs its steps: an expected GPU skip is one DEBUG line per process.

A CPU-only machine skips the two GPU steps every time an embedder loads; that is expected, so it
is said once at DEBUG. A CPU step that fails, or a GPU step someone pinned, is still a WARNING,
and ``EmbedderInfo.reason`` (what ``/health`` shows) keeps every reason either way. The model
is a real ONNX graph (mean colour -> fixed projection -> L2 norm) run by onnxruntime.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from lookalike.core.errors import Unavailable
from lookalike.embed import runtime
from lookalike.embed.runtime import load_embedder
from lookalike.registry import Registry

pytestmark = pytest.mark.skipif(
    Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists(),
    reason="these cases are about a machine without an NVIDIA GPU",
)

DIM = 8
GPU_REASONS = (
    "onnxruntime-cuda skipped: onnxruntime has no CUDAExecutionProvider; "
    "cuda skipped: the artifact has no torch weights file"
)


def _graph() -> onnx.ModelProto:
    proj = np.random.default_rng(0).standard_normal((3, DIM)).astype(np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["pixels"], ["mean"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["mean", "proj"], ["projected"]),
        helper.make_node("LpNormalization", ["projected"], ["embedding"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes,
        "lookalike_test_mean_colour",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", DIM])],
        initializer=[numpy_helper.from_array(proj, "proj")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _register(root: Path, *, broken_int8: bool = False) -> Registry:
    registry = Registry(root, "model")
    variants = {"fp32": "model_fp32.onnx"}
    if broken_int8:
        variants["int8"] = "model_int8.onnx"
    manifest = {
        "embedding_dim": DIM,
        "preprocess": {"size": 32},
        "variants": variants,
        "default_variant": "int8" if broken_int8 else "fp32",
    }
    with registry.create("tiny", manifest) as w:
        onnx.save(_graph(), str(w.path / "model_fp32.onnx"))
        if broken_int8:
            (w.path / "model_int8.onnx").write_bytes(b"not an onnx graph")
    return registry


@pytest.fixture(autouse=True)
def _fresh_process_memory() -> None:
    # "Once per process": forget what earlier tests in this process already said.
    runtime._said.clear()


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "lookalike.embed"
        and " skipped: " in r.message
        and "served by" not in r.message
    ]


def _served(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.message
        for r in caplog.records
        if r.name == "lookalike.embed" and r.levelno == logging.INFO and "served by" in r.message
    ]


def test_a_gpu_skip_without_a_gpu_is_debug_once_per_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = _register(tmp_path)
    caplog.set_level(logging.DEBUG, logger="lookalike.embed")
    first = load_embedder(registry, "tiny:1")
    said = _records(caplog)
    assert [r.levelno for r in said] == [logging.DEBUG, logging.DEBUG]
    assert "onnxruntime-cuda skipped" in said[0].message
    assert ": cuda skipped: the artifact has no torch weights" in said[1].message
    # The INFO line says what serves, without repeating the expected GPU skips.
    assert _served(caplog) == [
        "embedder tiny:1 served by onnxruntime-cpu:fp32 (serving with onnxruntime-cpu:fp32)"
    ]
    caplog.clear()
    second = load_embedder(registry, "tiny:1")
    assert _records(caplog) == []  # said once already
    # /health's reasons are unchanged, on every load.
    for emb in (first, second):
        assert emb.info.served_by == "onnxruntime-cpu:fp32"
        assert emb.info.reason == f"{GPU_REASONS}; serving with onnxruntime-cpu:fp32"
    vec = first.embed([Image.new("RGB", (40, 30), (200, 30, 60))])
    assert vec.shape == (1, DIM) and abs(float(np.linalg.norm(vec)) - 1) < 1e-5


def test_at_warning_level_a_cpu_only_load_says_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = _register(tmp_path)
    caplog.set_level(logging.WARNING, logger="lookalike.embed")
    load_embedder(registry, "tiny:1")
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_failing_cpu_step_is_still_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = _register(tmp_path, broken_int8=True)
    caplog.set_level(logging.DEBUG, logger="lookalike.embed")
    emb = load_embedder(registry, "tiny:1")
    warned = [r.message for r in _records(caplog) if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "onnxruntime-cpu:int8 skipped" in warned[0]
    assert emb.info.served_by == "onnxruntime-cpu:fp32"
    assert "onnxruntime-cpu:int8 skipped" in emb.info.reason
    caplog.clear()
    load_embedder(registry, "tiny:1")  # a real failure is said every time
    assert [r.levelno for r in _records(caplog)] == [logging.WARNING]


def test_a_pinned_gpu_runtime_that_cannot_run_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = _register(tmp_path)
    caplog.set_level(logging.DEBUG, logger="lookalike.embed")
    with pytest.raises(Unavailable, match="runtime pinned to cuda; onnxruntime-cuda skipped"):
        load_embedder(registry, "tiny:1", runtime="cuda")
    assert [r.levelno for r in _records(caplog)] == [logging.WARNING, logging.WARNING]
