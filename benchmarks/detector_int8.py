"""Does the int8 garment detector find the same people and garments as fp32? Street photos.

    python benchmarks/detector_int8.py --models M [--photos DIR] [--every 8] [--limit 200]
        [--runs 5] [--json OUT]

``M`` is a models/ folder whose production search model was built with an int8 detector
(``lookalike models build-default``; its manifest's ``detector.int8`` holds the build's own
figures). Its fp32 twin is rebuilt here the way the build makes it (the packaged detector with
the same input size), and both run on real photos of people (default every 8th of
``../shared/data/street/images``, at most 200): the share of photos where both or neither find
a person, the median and 10th-percentile IoU of their full-length garment boxes, the largest
difference of any exposure score the safety check reads and the safety decisions (at
``UNSAFE_SCORE``) that differ, and ms per photo in batches of 8
(median and p95 over ``--runs`` runs). Prints a table and writes JSON.

The build's own check runs on the demo photos it calibrates with, which show garments without
people: this is the check on people.
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
from lookalike.embed.bodyparts import BodyPartDetector, exposure, packaged_detector
from lookalike.embed.build import parts_agreement, resize_detector
from lookalike.moderation.prefilter import UNSAFE_SCORE
from lookalike.registry import Ref, Registry

SHARED = Path(
    os.environ.get("LOOKALIKE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def compare(det32: BodyPartDetector, det8: BodyPartDetector, images: list) -> dict[str, Any]:
    parts32, parts8 = det32.detect(images), det8.detect(images)
    figures = parts_agreement(parts32, parts8)
    exp_diff, unsafe_flips = [], 0
    for p32, p8 in zip(parts32, parts8, strict=True):
        e32, e8 = exposure(p32), exposure(p8)
        exp_diff.append(max([abs(e32.get(k, 0.0) - e8.get(k, 0.0)) for k in {*e32, *e8}] or [0.0]))
        unsafe_flips += _unsafe(e32) != _unsafe(e8)
    figures["exposure_max_abs_diff"] = round(float(max(exp_diff)), 4)
    figures["safety_decisions_that_differ"] = unsafe_flips
    return figures


def _unsafe(exposed: dict[str, float]) -> bool:
    """The pre-filter's safety decision (``Scorer``): an exposed part at ``UNSAFE_SCORE``."""
    return any(v >= UNSAFE_SCORE for v in exposed.values())


def speed(det: BodyPartDetector, images: list, runs: int) -> dict[str, float]:
    batch = images[:8]
    det.detect(batch)
    per_photo = []
    for _ in range(runs):
        for _ in range(5):
            t0 = time.perf_counter()
            det.detect(batch)
            per_photo.append((time.perf_counter() - t0) * 1000 / len(batch))
    return {
        "median_ms": round(statistics.median(per_photo), 2),
        "p95_ms": round(float(np.percentile(per_photo, 95)), 2),
    }


def main() -> None:
    ap = model_arguments(__doc__, "detector_int8")
    ap.add_argument("--photos", type=Path, default=SHARED / "street" / "images")
    ap.add_argument("--every", type=int, default=8)
    ap.add_argument("--limit", type=int, default=200)
    args = ap.parse_args()
    load = os.getloadavg()
    registry = Registry(args.models, "model")
    ref = registry.resolve(Ref.parse(args.model))
    manifest = registry.manifest(ref)
    own = manifest.get("detector")
    if not own:
        raise SystemExit(f"{ref} has no garment detector (a --plain build)")
    files = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in {".jpg", ".jpeg"})
    images = [load_image_file(p) for p in files[:: args.every][: args.limit]]
    served = BodyPartDetector(registry.path(ref) / own["file"])
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = Path(tmp) / "detector_fp32.onnx"
        resize_detector(packaged_detector(), fp32_path, int(own["input"]))
        fp32 = BodyPartDetector(fp32_path)
        figures = compare(fp32, served, images)
        times = {"fp32": speed(fp32, images, args.runs), own.get("variant", "?"): speed(
            served, images, args.runs)}  # fmt: skip
    print(f"{ref}: detector {own.get('variant')} at {own['input']} px against fp32, "
          f"{figures['photos']} photos of {args.photos}")  # fmt: skip
    for key, value in figures.items():
        print(f"  {key:26s} {value}")
    print(f"  {'variant':10s} {'median ms/photo':>16s} {'p95':>8s}   (batches of 8)")
    for variant, t in times.items():
        print(f"  {variant:10s} {t['median_ms']:16.2f} {t['p95_ms']:8.2f}")
    write(args.json, {"model": str(ref), "detector": own, "agreement": figures,
                      "ms_per_photo": times, "machine": machine(load)})  # fmt: skip


if __name__ == "__main__":
    main()
