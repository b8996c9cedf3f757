"""Which leading convs of the backbone to keep fp32 in its int8 build: fidelity and speed.

    python benchmarks/int8_layers.py --models M [--keep 2 3 4 6 7 9] [--runs 5] [--json OUT]

``M`` is a models/ folder with a built default (``lookalike models build-default``): its
``model_fp32.onnx`` is quantised here once per ``--keep`` count, the way the build does it
(static per-channel QDQ, MinMax, the tail kept fp32, 100 evenly spaced demo photos calibrate),
with the first N Conv nodes kept fp32. Each variant is scored by the share of fp32's 10 nearest
neighbours it keeps on the 430 demo photos (100 of them calibrated it) and on 300 street photos
none of the calibration saw, and timed, all variants and fp32 in turns in one process, batch 1
and batch 16 (ms per photo, median and p95 over ``--runs`` rounds). Prints a table and writes
JSON.

Why the count matters for speed and not only for fidelity: where fp32 meets int8, ONNX Runtime
reorders the tensor out of its blocked fp32 layout, quantises it and transposes it to NHWC. After
the 4th conv that tensor is block 2's expansion, 96 channels at 112×112; after the 3rd or 6th it
has 16 or 24 channels, at 112×112 or 56×56.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from harness import machine, model_arguments, write

from lookalike.core.images import load_image_file
from lookalike.embed import build
from lookalike.embed.measure import neighbour_recall
from lookalike.embed.preprocess import PreprocessConfig, preprocess_batch
from lookalike.embed.runtime import onnx_session
from lookalike.registry import Ref, Registry

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOOKALIKE_SHARED_DATA", REPO.parent / "shared" / "data"))


def _pixels(paths: list[Path], config: PreprocessConfig) -> np.ndarray:
    return preprocess_batch([load_image_file(p) for p in paths], config)


def _timings(sessions: dict[str, Any], pixels: np.ndarray, runs: int) -> dict[str, Any]:
    """ms per photo of each session, batch 1 and 16, the sessions in turns each round."""
    out: dict[str, Any] = {name: {} for name in sessions}
    for batch in (1, 16):
        x = pixels[:batch]
        samples: dict[str, list[float]] = {name: [] for name in sessions}
        for s in sessions.values():
            s.run(None, {"pixels": x})
        for _ in range(runs):
            for _ in range(max(4, 48 // batch)):
                for name, s in sessions.items():
                    t0 = time.perf_counter()
                    s.run(None, {"pixels": x})
                    samples[name].append((time.perf_counter() - t0) * 1000 / batch)
        for name, ms in samples.items():
            out[name][f"batch{batch}"] = {
                "median_ms": round(statistics.median(ms), 2),
                "p95_ms": round(float(np.percentile(ms, 95)), 2),
            }
    return out


def main() -> None:
    ap = model_arguments(__doc__, "int8_layers")
    ap.add_argument("--keep", type=int, nargs="+", default=[2, 3, 4, 6, 7, 9])
    ap.add_argument("--street", type=int, default=300)
    args = ap.parse_args()
    load = os.getloadavg()

    reg = Registry(args.models, "model")
    folder = reg.path(reg.resolve(Ref.parse(args.model)))
    manifest = reg.manifest(reg.resolve(Ref.parse(args.model)))
    config = PreprocessConfig(**manifest["preprocess"])
    demo = _pixels(sorted((REPO / "demo" / "catalog" / "images").glob("*.jpg")), config)
    street_files = sorted((SHARED / "street" / "images").glob("*.jpg"))
    street = _pixels(
        street_files[:: max(1, len(street_files) // args.street)][: args.street], config
    )
    fp32 = folder / "model_fp32.onnx"
    s32 = onnx_session(fp32, ["CPUExecutionProvider"])
    ref = {"demo": build._embed_all(s32, demo), "street": build._embed_all(s32, street)}
    calib = demo[:: max(1, len(demo) // build.CALIBRATION_COUNT)][: build.CALIBRATION_COUNT]

    rows: dict[str, dict[str, Any]] = {}
    sessions: dict[str, Any] = {"fp32": s32}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for n in args.keep:
            out = work / f"int8_keep{n}.onnx"

            def keep(pre: Path, n: int = n) -> list[str]:
                return sorted(set(build._tail_nodes(pre)) | set(build._leading_convs(pre, n)))

            build._quantise_graph(fp32, out, calib, work, "pixels", keep)
            s8 = onnx_session(out, ["CPUExecutionProvider"])
            name = f"int8, first {n} fp32"
            rows[name] = {
                "kept_convs": n,
                "demo_r10_fidelity": round(
                    neighbour_recall(ref["demo"], build._embed_all(s8, demo), 10), 4
                ),
                "street_r10_fidelity": round(
                    neighbour_recall(ref["street"], build._embed_all(s8, street), 10), 4
                ),
            }
            sessions[name] = s8
            print(name, rows[name], flush=True)
        speed = _timings(sessions, street, args.runs)
    rows["fp32"] = {"kept_convs": None, "demo_r10_fidelity": 1.0, "street_r10_fidelity": 1.0}
    print(
        f"\n{'variant':>20} {'demo R@10':>10} {'street R@10':>12}"
        f" {'b1 p50/p95 ms':>15} {'b16 p50/p95 ms':>15}"
    )
    for name, row in rows.items():
        row.update(speed[name])
        b1, b16 = row["batch1"], row["batch16"]
        print(
            f"{name:>20} {row['demo_r10_fidelity']:>10.4f} {row['street_r10_fidelity']:>12.4f}"
            f" {b1['median_ms']:>7.2f}/{b1['p95_ms']:<7.2f}"
            f" {b16['median_ms']:>7.2f}/{b16['p95_ms']:<7.2f}"
        )
    write(
        args.json,
        {
            "model": args.model,
            "demo_photos": len(demo),
            "street_photos": len(street),
            "calibration_photos": len(calib),
            "runs": args.runs,
            "machine": machine(load),
            "variants": rows,
        },
    )


if __name__ == "__main__":
    main()
