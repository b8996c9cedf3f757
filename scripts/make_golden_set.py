"""Build ``demo/golden/``: the golden set every model and index must pass before promotion.

From the demo catalog (real photos, free to use) it picks ``--queries`` target items and
``--distractors`` other items with a fixed seed, copies their photos into ``catalog/`` and, for
each target, writes a perturbed query photo into ``queries/``: an off-centre crop keeping
60-80 % of each side, a horizontal flip for half of them, a resize, a brightness change and a
JPEG re-compression. A shopper's photo of the same dress is harder than this; the golden set
is a smoke alarm for broken models, not a benchmark.

    python scripts/make_golden_set.py            # rewrites demo/golden/ (deterministic)
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
from pathlib import Path

from PIL import Image, ImageEnhance

REPO = Path(__file__).resolve().parents[1]


def perturb(img: Image.Image, rng: random.Random, flip: bool) -> tuple[Image.Image, dict]:
    w, h = img.size
    fw, fh = rng.uniform(0.6, 0.8), rng.uniform(0.6, 0.8)
    cw, ch = round(w * fw), round(h * fh)
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    out = img.convert("RGB").crop((left, top, left + cw, top + ch))
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    scale = rng.uniform(0.8, 1.8)
    out = out.resize((max(16, round(cw * scale)), max(16, round(ch * scale))), Image.BICUBIC)
    brightness = rng.uniform(0.8, 1.2)
    out = ImageEnhance.Brightness(out).enhance(brightness)
    quality = rng.randint(50, 75)
    recipe = {
        "crop": [left, top, left + cw, top + ch],
        "flip": flip,
        "scale": round(scale, 3),
        "brightness": round(brightness, 3),
        "jpeg_quality": quality,
    }
    return out, recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, default=REPO / "demo" / "catalog")
    ap.add_argument("--out", type=Path, default=REPO / "demo" / "golden")
    ap.add_argument("--queries", type=int, default=24)
    ap.add_argument("--distractors", type=int, default=56)
    ap.add_argument("--seed", type=int, default=20261128)
    args = ap.parse_args()

    with open(args.catalog / "items.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("image")]
    rng = random.Random(args.seed)
    chosen = rng.sample(rows, args.queries + args.distractors)
    targets = chosen[: args.queries]  # the rest are distractors

    if args.out.exists():
        shutil.rmtree(args.out)
    (args.out / "catalog").mkdir(parents=True)
    (args.out / "queries").mkdir()
    gallery, queries = [], []
    for row in chosen:
        rel = f"catalog/{row['item_id']}.jpg"
        shutil.copyfile(args.catalog / row["image"], args.out / rel)
        gallery.append({"item_id": row["item_id"], "image": rel, "category": row["category"]})
    for i, row in enumerate(targets):
        with Image.open(args.catalog / row["image"]) as img:
            query, recipe = perturb(img, rng, flip=i % 2 == 1)
        rel = f"queries/{row['item_id']}.jpg"
        query.save(args.out / rel, "JPEG", quality=recipe["jpeg_quality"])
        queries.append(
            {
                "query": rel,
                "item_id": row["item_id"],
                "catalog_image": f"catalog/{row['item_id']}.jpg",
                "perturbation": recipe,
            }
        )
    manifest = {
        "format": 1,
        "description": (
            "Golden set: perturbed photos of demo-catalog items and the item each must find. "
            "Built by scripts/make_golden_set.py; the photos come from demo/catalog "
            "(alexeygrigorev/clothing-dataset, free to use for any purpose)."
        ),
        "seed": args.seed,
        "queries": queries,
        "gallery": gallery,
    }
    (args.out / "golden.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(queries)} queries and {len(gallery)} gallery photos to {args.out}")


if __name__ == "__main__":
    main()
