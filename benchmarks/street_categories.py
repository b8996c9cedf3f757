"""Does the top result's kind match the garment in the photo? (issue 11's street check)

Indexes the bundled demo catalog with a model and searches it as the search page does (the
model's own crop mode) with two sets of photos, counting a photo as right when its top result's
category is the garment it shows:

- street-fashion photos of people (../shared/data/street: tags.csv lists each photo's garments,
  has_dress says whether one is a dress): Dress for a dress photo; for the others, a demo
  category named by one of its tags (blouse → Blouse/Top/Shirt ...); searched both with the
  model's own crop (the API's default) and as the search page's main list does (``page_``:
  crop mode multi, every garment found, merged);
- shopper photos of a garment alone (../shared/data/clothing, the photos that are *not* in the
  demo catalog and whose label is a demo category): the top result's category is the label.
  Split into two halves (even and odd rows of labels.csv) so a setting chosen on one can be
  reported on the other; also the share of the top 5 that are of the photo's kind.

Prints a table and writes JSON.

    python benchmarks/street_categories.py --home H --model effnet_lite0:1 [--limit 400]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from lookalike.core.images import load_image_file
from lookalike.embed import load_embedder
from lookalike.registry import Registry
from lookalike.search.crops import embed_query_crops

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "catalog"
# street tag -> demo categories that count as the same kind of garment
KINDS = {
    "dress": {"Dress"},
    "blouse": {"Blouse", "Top", "Shirt", "Longsleeve", "T-Shirt", "Body"},
    "top": {"Top", "Blouse", "T-Shirt", "Longsleeve", "Body"},
    "t-shirt": {"T-Shirt", "Top", "Longsleeve"},
    "shirt": {"Shirt", "Blouse", "Longsleeve"},
    "sweater": {"Longsleeve", "Top", "Outwear"},
    "jumper": {"Longsleeve", "Top", "Outwear"},
    "cardigan": {"Outwear", "Longsleeve", "Blazer"},
    "jacket": {"Outwear", "Blazer"},
    "coat": {"Outwear", "Blazer"},
    "blazer": {"Blazer", "Outwear"},
    "skirt": {"Skirt"},
    "shorts": {"Shorts"},
    "pants": {"Pants"},
    "jeans": {"Pants"},
    "leggings": {"Pants"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--street", type=Path, default=ROOT.parent / "shared/data/street")
    ap.add_argument("--clothing", type=Path, default=ROOT.parent / "shared/data/clothing")
    ap.add_argument("--limit", type=int, default=400, help="every Nth photo up to this many")
    ap.add_argument("--json", type=Path, default=Path("street_categories.json"))
    args = ap.parse_args()
    rows = list(csv.DictReader(open(args.street / "tags.csv", encoding="utf-8")))
    rows = rows[:: max(1, len(rows) // args.limit)][: args.limit]
    items = list(csv.DictReader(open(DEMO / "items.csv", encoding="utf-8")))
    cats = np.asarray([r["category"] for r in items])
    registry = Registry(args.home / "models", "model")
    out = {}
    for ref in args.model:
        emb = load_embedder(registry, ref, runtime="onnx-cpu")
        gallery = np.concatenate(
            [
                emb.embed([load_image_file(DEMO / r["image"]) for r in items[i : i + 32]])
                for i in range(0, len(items), 32)
            ]
        )
        # "": the model's own crop (the API's and the extension's default); "page_": the search
        # page's main list (per_garment=true, crop mode multi: every garment found, merged)
        right = {f"{p}{k}": [0, 0] for p in ("", "page_") for k in ("dress", "other")}
        for r in rows:
            tags = set(r["tags"].split())
            want = set().union(*(KINDS[t] for t in tags if t in KINDS)) if tags else set()
            if r["has_dress"] == "1":
                want = {"Dress"}
            if not want:
                continue
            photo = load_image_file(args.street / "images" / r["file"])
            key = "dress" if r["has_dress"] == "1" else "other"
            for prefix, mode in (("", "auto"), ("page_", "multi")):
                _, vecs = embed_query_crops(emb, photo, mode)
                top = cats[int(np.argmax((vecs @ gallery.T).max(axis=0)))]
                right[prefix + key][0] += top in want
                right[prefix + key][1] += 1
        out[ref] = {
            k: {"right": a, "photos": n, "share": round(a / max(n, 1), 3)}
            for k, (a, n) in right.items()
        }
        out[ref].update(
            _alone(emb, gallery, cats, args.clothing, {Path(r["image"]).name for r in items})
        )
        print(f"{ref}: {json.dumps(out[ref])}", flush=True)
    args.json.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")


def _alone(
    emb: object, gallery: np.ndarray, cats: np.ndarray, root: Path, demo: set[str]
) -> dict[str, dict[str, float]]:
    """The held-out photos of a garment alone, in two halves: top-1 right and top-5 share."""
    labels = list(csv.DictReader(open(root / "labels.csv", encoding="utf-8")))
    known = set(cats.tolist())
    out = {}
    for half in (0, 1):
        picked = [r for r in labels[half::2] if r["file"] not in demo and r["label"] in known]
        top1 = top5 = 0.0
        for r in picked:
            _, vecs = embed_query_crops(emb, load_image_file(root / "images" / r["file"]))
            order = np.argsort(-(vecs @ gallery.T).max(axis=0))[:5]
            top1 += cats[order[0]] == r["label"]
            top5 += float(np.mean(cats[order] == r["label"]))
        n = max(len(picked), 1)
        out[f"alone_half{half}"] = {
            "photos": len(picked),
            "top1_right": round(top1 / n, 3),
            "top5_same_kind": round(top5 / n, 3),
        }
    return out


if __name__ == "__main__":
    main()
