"""One way to open an ONNX Runtime session: every model this package runs goes through it.

Intra-op threads = the cores this process may use, and they **sleep between kernels instead of
spin-waiting**. A search runs two graphs in turn (the body-part detector, then the backbone) and
the pre-filter scores beside other work on the same 2 cores; a pool that spins after its run
steals the cores from the next graph. Measured on this 2-core machine, idle, detector (256 px)
then int8 backbone (batch 2), 200 calls, three alternating rounds: both sleeping 18.4–20.5 ms
median, detector sleeping + backbone spinning 20.8–25.7 ms, both spinning 39.8–47.6 ms. One
graph alone loses nothing by sleeping (int8 batch 1: 5.8 vs 6.0 ms median).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lookalike.embed.measure import cpu_threads

__all__ = ["onnx_session"]


def onnx_session(
    model: Path | bytes, providers: list[str] | None = None, threads: int | None = None
) -> Any:
    """An ONNX Runtime session over a file or a serialised graph (default: the CPU provider)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or cpu_threads()
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # warnings about unused initialisers are noise here
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, opts, providers=providers or ["CPUExecutionProvider"])
