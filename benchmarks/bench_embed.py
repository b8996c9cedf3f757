"""Embedder speed on this CPU: fp32 ONNX, int8 ONNX and the torch CPU fallback.

    python benchmarks/bench_embed.py [--models DIR] [--ref effnet_lite0:production]
                                     [--runs 200] [--json artifacts/bench_embed.json]

For each runtime: batch-1 latency of the model alone (preprocessed input) and end to end
(letterbox + model, from a decoded PIL image), median and p95 over ``--runs`` runs after a
warm-up; and batch-32 throughput (images/s, median over ``--batches`` batches). Prints a table
and writes JSON. Build the model first with ``lookalike models build-default``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.core.settings import Settings
from lookalike.embed.measure import cpu_threads, latency_ms
from lookalike.embed.preprocess import preprocess_batch
from lookalike.embed.runtime import LoadedEmbedder, load_embedder
from lookalike.registry import Registry

REPO = Path(__file__).resolve().parents[1]
TARGET_INT8_P95_MS = 5.0


def _images(folder: Path, n: int) -> list[Image.Image]:
    paths = sorted(folder.glob("*.jpg"))[:n]
    if not paths:
        sys.exit(f"no images in {folder}")
    out = []
    for p in paths:
        with Image.open(p) as img:
            out.append(img.convert("RGB"))
    while len(out) < n:
        out.extend(out[: n - len(out)])
    return out


def bench(emb: LoadedEmbedder, images: list[Image.Image], runs: int, batches: int) -> dict:
    one_px = preprocess_batch(images[:1], emb.preprocess)
    batch_px = preprocess_batch(images[:32], emb.preprocess)
    warm = max(10, runs // 10)
    model_only = latency_ms(lambda: emb.embed_pixels(one_px), runs=runs, warmup=warm)
    end_to_end = latency_ms(lambda: emb.embed(images[:1]), runs=runs, warmup=warm)
    batch = latency_ms(lambda: emb.embed(images[:32]), runs=batches, warmup=2)
    batch_model = latency_ms(lambda: emb.embed_pixels(batch_px), runs=batches, warmup=2)
    return {
        "served_by": emb.info.served_by,
        "batch1_model": model_only,
        "batch1_end_to_end": end_to_end,
        "batch32_end_to_end": batch,
        "batch32_images_per_s": round(32 / (batch["median_ms"] / 1000), 1),
        "batch32_model_images_per_s": round(32 / (batch_model["median_ms"] / 1000), 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=None, help="models/ folder (default: Settings)")
    ap.add_argument("--ref", default="effnet_lite0:production")
    ap.add_argument("--images", type=Path, default=REPO / "demo" / "catalog" / "images")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--json", type=Path, default=REPO / "artifacts" / "bench_embed.json")
    ap.add_argument("--skip-torch", action="store_true")
    args = ap.parse_args(argv)

    registry = Registry(args.models or Settings().models_dir, "model")
    images = _images(args.images, 32)
    configs = [("onnx fp32", "onnx-cpu", "fp32"), ("onnx int8", "onnx-cpu", "int8")]
    if not args.skip_torch:
        configs.append(("torch cpu", "torch-cpu", None))
    results: dict[str, dict] = {}
    for label, runtime, variant in configs:
        try:
            emb = load_embedder(registry, args.ref, runtime=runtime, variant=variant)
        except Exception as exc:  # noqa: BLE001 - a missing runtime is a row, not a crash
            print(f"{label}: unavailable ({exc})")
            continue
        t0 = time.perf_counter()
        results[label] = bench(emb, images, args.runs, args.batches)
        results[label]["seconds"] = round(time.perf_counter() - t0, 1)

    header = (
        f"{'runtime':<11} {'served_by':<22} {'b1 model med/p95 ms':>20} "
        f"{'b1 e2e med/p95 ms':>18} {'b32 img/s':>10} {'b32 model img/s':>15}"
    )
    print(f"\n{args.ref} on {cpu_threads()} threads, {platform.processor() or platform.machine()}")
    print(header)
    print("-" * len(header))
    for label, r in results.items():
        m, e = r["batch1_model"], r["batch1_end_to_end"]
        print(
            f"{label:<11} {r['served_by']:<22} "
            f"{m['median_ms']:>9.2f} /{m['p95_ms']:>7.2f}  "
            f"{e['median_ms']:>8.2f} /{e['p95_ms']:>7.2f} "
            f"{r['batch32_images_per_s']:>10.1f} {r['batch32_model_images_per_s']:>15.1f}"
        )
    int8 = results.get("onnx int8")
    if int8:
        p95 = int8["batch1_model"]["p95_ms"]
        verdict = "meets" if p95 <= TARGET_INT8_P95_MS else "misses"
        print(f"\nint8 batch-1 p95 {p95:.2f} ms {verdict} the {TARGET_INT8_P95_MS} ms target")
    doc = {
        "ref": str(registry.resolve(args.ref)),
        "threads": cpu_threads(),
        "runs": args.runs,
        "batches": args.batches,
        "target_int8_batch1_p95_ms": TARGET_INT8_P95_MS,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average": list(np.round(_loadavg(), 2)),
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2))
    print(f"wrote {args.json}")
    return 0


def _loadavg() -> tuple[float, float, float]:
    try:
        import os

        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


if __name__ == "__main__":
    raise SystemExit(main())
