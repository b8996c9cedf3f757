"""Does the top result's kind match the garment in a street photo? (issue 11's street check)

Indexes the bundled demo catalog with a model, searches it with street-fashion photos of people
(../shared/data/street: tags.csv lists each photo's garments, has_dress says whether one is a
dress) as the search page does (the model's own crop mode), and counts a photo as right when
its top result's category is a garment the photo shows: Dress for a dress photo; for the
others, a demo category named by one of its tags (blouse → Blouse/Top/Shirt ...). Prints a
table and writes JSON.

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
        right = {"dress": [0, 0], "other": [0, 0]}
        for r in rows:
            tags = set(r["tags"].split())
            want = set().union(*(KINDS[t] for t in tags if t in KINDS)) if tags else set()
            if r["has_dress"] == "1":
                want = {"Dress"}
            if not want:
                continue
            _, vecs = embed_query_crops(emb, load_image_file(args.street / "images" / r["file"]))
            top = cats[int(np.argmax((vecs @ gallery.T).max(axis=0)))]
            key = "dress" if r["has_dress"] == "1" else "other"
            right[key][0] += top in want
            right[key][1] += 1
        out[ref] = {
            k: {"right": a, "photos": n, "share": round(a / max(n, 1), 3)}
            for k, (a, n) in right.items()
        }
        print(
            f"{ref}: dress photos {out[ref]['dress']}, other photos {out[ref]['other']}", flush=True
        )
    args.json.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
