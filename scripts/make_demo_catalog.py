"""Build the bundled demo catalog from ../shared/data/clothing (licence: free for any use).

Run once by a maintainer; its output (demo/catalog/) is committed so the demo runs without
../shared. Deterministic: the same input gives the same catalog.

    python scripts/make_demo_catalog.py [--src ../shared/data/clothing] [--out demo/catalog]
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
from pathlib import Path

from PIL import Image

# Dresses first (all of them), then a few of each garment a shopper might confuse with one.
OTHERS = {
    "Skirt": 16, "Top": 16, "Blouse": 12, "Body": 12, "Outwear": 12, "Blazer": 12,
    "T-Shirt": 12, "Shirt": 12, "Longsleeve": 12, "Pants": 8, "Shorts": 8,
}
# Typical rental prices (USD per 4-day rental) by category, for a believable demo.
PRICE_RANGE = {"Dress": (30, 180), "Outwear": (25, 120), "Blazer": (25, 90)}
COLOURS = {
    "black": (20, 20, 20), "white": (235, 235, 235), "grey": (128, 128, 128),
    "red": (190, 30, 40), "pink": (230, 150, 170), "orange": (230, 120, 40),
    "yellow": (230, 210, 60), "green": (50, 130, 60), "blue": (40, 80, 170),
    "navy": (25, 35, 80), "purple": (110, 50, 130), "brown": (110, 70, 40),
    "beige": (215, 195, 160),
}
STYLES = {
    "Dress": ["midi dress", "maxi dress", "mini dress", "wrap dress", "shift dress",
              "slip dress", "cocktail dress", "sundress"],
}


def colour_name(path: Path) -> str:
    """Name the dominant colour of the image's centre (the garment, usually)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        centre = im.crop((w // 4, h // 4, 3 * w // 4, 3 * h // 4)).resize((16, 16))
        r, g, b = (sum(c) / 256 for c in zip(*centre.get_flattened_data(), strict=True))
    def distance(name: str) -> float:
        return sum((a - c) ** 2 for a, c in zip(COLOURS[name], (r, g, b), strict=True))

    return min(COLOURS, key=distance)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=Path("../shared/data/clothing"))
    ap.add_argument("--out", type=Path, default=Path("demo/catalog"))
    args = ap.parse_args()
    rng = random.Random(20261128)

    rows = list(csv.DictReader(open(args.src / "labels.csv", encoding="utf-8")))
    rows = [r for r in rows if r["kids"] == "False"]
    rows.sort(key=lambda r: r["file"])
    chosen = [r for r in rows if r["label"] == "Dress"]
    for label, n in OTHERS.items():
        chosen += [r for r in rows if r["label"] == label][:n]

    images = args.out / "images"
    if args.out.exists():
        shutil.rmtree(args.out)
    images.mkdir(parents=True)
    with open(args.out / "items.csv", "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["item_id", "title", "category", "price", "available", "image"])
        for i, r in enumerate(chosen, 1):
            src = args.src / "images" / r["file"]
            dst = images / r["file"]
            shutil.copyfile(src, dst)
            label = r["label"]
            style = rng.choice(STYLES.get(label, [label.lower()]))
            lo, hi = PRICE_RANGE.get(label, (15, 60))
            price = round(rng.uniform(lo, hi) / 5) * 5
            out.writerow([
                f"LK-{i:04d}",
                f"{colour_name(src).capitalize()} {style}",
                label,
                f"{price:.2f}",
                "true" if rng.random() < 0.8 else "false",
                f"images/{r['file']}",
            ])
    print(f"wrote {len(chosen)} items to {args.out}")


if __name__ == "__main__":
    main()
